package testutil

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Get fetches url, as a monitoring system would, and returns the status
// and the body; it fails the test if the server does not answer.
func Get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// CheckSamples checks the values of series in a Prometheus text-format
// scrape. A series is written as the format writes it: name and labels,
// labels sorted by name (`outbox_deliveries_total{status="failed",upstream="x"}`).
func CheckSamples(t testing.TB, scrape string, want map[string]float64) {
	t.Helper()
	for series, w := range want {
		got, ok := sample(scrape, series)
		if !ok || got != w {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, w)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", scrape)
	}
}

func sample(scrape, series string) (float64, bool) {
	for line := range strings.SplitSeq(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}
