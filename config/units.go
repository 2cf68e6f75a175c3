package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

const day = 24 * time.Hour

// UnmarshalText reads a Go duration ("90s", "1h30m") optionally preceded by
// a whole number of days ("5d", "1d12h"). Days exist because spool lifetimes
// are naturally said in days and "120h" is easy to get wrong.
func (d *Duration) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	v, err := parseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: %w (want e.g. \"30s\", \"15m\", \"1h30m\" or \"5d\")", s, err)
	}
	d.Duration = v
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	if s[0] == '-' {
		return 0, errors.New("negative")
	}
	// No Go duration unit contains a 'd', so the first one ends the day count.
	days, rest, hasDays := strings.Cut(s, "d")
	if !hasDays {
		return goDuration(s)
	}
	n, err := strconv.ParseUint(days, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("days must be a whole number")
	}
	if n > uint64(math.MaxInt64/int64(day)) {
		return 0, errors.New("too large")
	}
	total := time.Duration(n) * day
	if rest == "" {
		return total, nil
	}
	if rest[0] == '-' || rest[0] == '+' {
		return 0, errors.New("sign after the day count")
	}
	r, err := goDuration(rest)
	if err != nil {
		return 0, err
	}
	if total > math.MaxInt64-r {
		return 0, errors.New("too large")
	}
	return total + r, nil
}

// goDuration is time.ParseDuration with its error cut down to the reason,
// as ours already quotes the text.
func goDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "time: ")
		msg, _, _ = strings.Cut(msg, " in duration ")
		if strings.HasPrefix(msg, "invalid duration") {
			msg = "bad syntax"
		}
		return 0, errors.New(msg)
	}
	return d, nil
}

// MarshalText writes whole days as "5d" so that a round trip through a
// config file stays readable; other values use Go's notation.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// String is like time.Duration.String but says "5d" for whole days.
func (d Duration) String() string {
	if d.Duration > 0 && d.Duration%day == 0 {
		return strconv.FormatInt(int64(d.Duration/day), 10) + "d"
	}
	return d.Duration.String()
}

// Binary units, as mail size limits are conventionally quoted; "MB" means
// MiB here because that is what sysadmins expect from "25MB".
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	// Longest first so that "kib" is not taken for "b".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30},
	{"b", 1},
}

// UnmarshalText reads a byte count: "512", "512B", "10KB", "25MB", "1GB",
// "25MiB" (case-insensitive, powers of 1024).
func (s *Size) UnmarshalText(text []byte) error {
	v, err := parseSize(string(text))
	if err != nil {
		return fmt.Errorf("invalid size %q: %w (want a byte count, or a whole number with KB, MB or GB)", string(text), err)
	}
	*s = v
	return nil
}

// UnmarshalTOML lets a size be written as a bare TOML integer as well as a
// string; BurntSushi/toml calls it in preference to UnmarshalText.
func (s *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return fmt.Errorf("invalid size %d: negative", v)
		}
		*s = Size(v)
		return nil
	case string:
		return s.UnmarshalText([]byte(v))
	default:
		return fmt.Errorf("expected an integer or a string such as \"25MB\", got %s", tomlType(v))
	}
}

func parseSize(text string) (Size, error) {
	t := strings.ToLower(strings.TrimSpace(text))
	mult := int64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	if t == "" {
		return 0, errors.New("no number")
	}
	if t[0] == '-' {
		return 0, errors.New("negative")
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return 0, errors.New("not a whole number")
	}
	if n > math.MaxInt64/mult {
		return 0, errors.New("too large")
	}
	return Size(n * mult), nil
}

// MarshalText writes the form String returns, which UnmarshalText reads back.
func (s Size) MarshalText() ([]byte, error) {
	return []byte(s.String()), nil
}

// String gives the largest binary unit that divides the size exactly, e.g.
// "25MiB", "1536B", so that logged limits match what was configured.
func (s Size) String() string {
	for _, u := range []struct {
		suffix string
		mult   Size
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && s%u.mult == 0 {
			return strconv.FormatInt(int64(s/u.mult), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}
