package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestPartsWait(t *testing.T) {
	untilDone := func(ctx context.Context) error { <-ctx.Done(); return nil }
	stuck := make(chan struct{}) // a part that misses the end of its context
	t.Cleanup(func() { close(stuck) })
	failed := errors.New("accept: too many open files")
	for _, tt := range []struct {
		name    string
		parts   map[string]func(context.Context) error
		stop    bool   // end the context (SIGTERM)
		wantErr string // "" for nil
	}{
		{"all stop on SIGTERM", map[string]func(context.Context) error{
			"listener a": untilDone, "queue runner": untilDone}, true, ""},
		{"a canceled part is no failure", map[string]func(context.Context) error{
			"listener a": func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}, true, ""},
		{"a failed part stops the others", map[string]func(context.Context) error{
			"listener a": untilDone, "listener b": func(context.Context) error { return failed }, "queue runner": untilDone}, false, failed.Error()},
		{"a stuck part is given up on", map[string]func(context.Context) error{
			"listener a": untilDone, "listener b": func(context.Context) error { <-stuck; return nil }, "queue runner": untilDone}, true,
			"shutdown: listener b still running"},
		{"a stuck part after a failure", map[string]func(context.Context) error{
			"listener b": func(context.Context) error { <-stuck; return nil }, "metrics": func(context.Context) error { return failed }}, false,
			"shutdown: listener b still running"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			ps := newParts(ctx, cancel)
			for name, fn := range tt.parts {
				ps.start(name, fn)
			}
			if tt.stop {
				cancel(context.Canceled)
			}
			done := make(chan error, 1)
			go func() { done <- ps.wait(50*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("wait still waiting 30 s after shutdown began")
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("wait: %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("wait: %v, want %q", err, tt.wantErr)
			}
		})
	}
}
