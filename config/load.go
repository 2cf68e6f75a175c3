package config

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"

	"github.com/BurntSushi/toml"
)

// Error is one problem found in a configuration file. Load and Parse
// return every problem they find as an *Error, joined with errors.Join in
// file order, so the text is one "file:line: key: message" per line.
type Error struct {
	File string
	Line int // 1-based; 0 when the problem has no single place
	// Key is the key the problem is about, e.g. "upstream[0].tls". It is
	// empty when Msg names the key itself (unknown keys) or there is none
	// (syntax errors, a missing [[upstream]]).
	Key string
	Msg string
}

func (e *Error) Error() string {
	s := e.File
	if e.Line > 0 {
		s += fmt.Sprintf(":%d", e.Line)
	}
	if e.Key != "" {
		s += ": " + e.Key
	}
	return s + ": " + e.Msg
}

// Resolve picks the configuration file: the --config/-C flag, then
// $OUTBOX_CONFIG, then DefaultPath. getenv is a parameter so that callers
// and tests need not touch the process environment.
func Resolve(flagValue string, getenv func(string) string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := getenv("OUTBOX_CONFIG"); v != "" {
		return v
	}
	return DefaultPath
}

// Load reads, defaults and validates the configuration file at path. It
// does not touch the files the configuration names (password, TLS and users
// files are read when they are used), so a config can be checked anywhere.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load for a configuration already in memory; file is used only
// in error messages and as Config.Path.
func Parse(file string, data []byte) (*Config, error) {
	// Decoding into a generic map and walking it ourselves, rather than
	// letting toml fill the struct, lets us report every bad key instead of
	// stopping at the first, and name [[upstream]] entries by index.
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		e := &Error{File: file, Msg: err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			e.Line, e.Msg = pe.Position.Line, pe.Message
		}
		return nil, errors.Join(e)
	}

	l := &loader{
		file:  file,
		lines: keyLines(string(data)),
		set:   make(map[string]bool),
		bad:   make(map[string]bool),
	}
	c := &Config{Path: file}
	l.decode("", raw, reflect.ValueOf(c).Elem())
	l.defaults(c)
	l.validate(c)
	if len(l.errs) > 0 {
		return nil, l.err()
	}
	return c, nil
}

// loader carries what error reporting and defaulting need to know about the
// file beyond its decoded values.
type loader struct {
	file  string
	lines map[string]int  // key path → line, see keyLines
	set   map[string]bool // key paths present in the file
	bad   map[string]bool // key paths already reported
	errs  []*Error
}

// errorf reports a problem with key. Only the first problem per key is
// kept: a value that failed to decode would otherwise draw a second,
// confusing complaint from validation.
func (l *loader) errorf(key, format string, args ...any) {
	l.errorAt(key, key, format, args...)
}

// errorAt is errorf placed at the line of another key, for a problem that
// key causes: a missing cert_file is best shown next to tls = "starttls".
func (l *loader) errorAt(at, key, format string, args ...any) {
	if key != "" {
		if l.bad[key] {
			return
		}
		l.bad[key] = true
	}
	l.report(at, key, fmt.Sprintf(format, args...))
}

// report records msg at the line of the key path at.
func (l *loader) report(at, key, msg string) {
	line := 0
	if at != "" {
		line = lineOf(l.lines, at)
	}
	l.errs = append(l.errs, &Error{File: l.file, Line: line, Key: key, Msg: msg})
}

func (l *loader) err() error {
	slices.SortStableFunc(l.errs, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
	errs := make([]error, len(l.errs))
	for i, e := range l.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}
