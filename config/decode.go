package config

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// decode stores the TOML value v (as produced by toml.Decode into a map)
// into rv, the field at key path, reporting type mismatches and unknown keys
// and recording which keys were present so defaults can tell "absent" from
// an explicit zero.
func (l *loader) decode(path string, v any, rv reflect.Value) {
	if path != "" {
		l.set[path] = true
	}
	if rv.CanAddr() {
		switch u := rv.Addr().Interface().(type) {
		case toml.Unmarshaler:
			if err := u.UnmarshalTOML(v); err != nil {
				l.errorf(path, "%v", err)
			}
			return
		case encoding.TextUnmarshaler:
			s, ok := v.(string)
			if !ok {
				l.errorf(path, "expected a string, got %s", describe(v))
				return
			}
			if err := u.UnmarshalText([]byte(s)); err != nil {
				l.errorf(path, "%v", err)
			}
			return
		}
	}

	switch rv.Kind() {
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			l.errorf(path, "expected a string, got %s", describe(v))
			return
		}
		rv.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			l.errorf(path, "expected true or false, got %s", describe(v))
			return
		}
		rv.SetBool(b)
	case reflect.Int:
		n, ok := v.(int64)
		if !ok {
			l.errorf(path, "expected an integer, got %s", describe(v))
			return
		}
		if rv.OverflowInt(n) {
			l.errorf(path, "%d is out of range", n)
			return
		}
		rv.SetInt(n)
	case reflect.Slice:
		l.decodeSlice(path, v, rv)
	case reflect.Map:
		l.decodeMap(path, v, rv)
	case reflect.Struct:
		l.decodeStruct(path, v, rv)
	default:
		// Only reachable by adding a field of a new kind to Config.
		panic(fmt.Sprintf("config: cannot decode into %s (%s)", rv.Type(), path))
	}
}

func (l *loader) decodeSlice(path string, v any, rv reflect.Value) {
	var elems []any
	switch v := v.(type) {
	case []any:
		elems = v
	case []map[string]any: // an array of tables: [[upstream]]
		for _, m := range v {
			elems = append(elems, m)
		}
	default:
		l.errorf(path, "expected an array, got %s", describe(v))
		return
	}
	s := reflect.MakeSlice(rv.Type(), len(elems), len(elems))
	for i, e := range elems {
		l.decode(fmt.Sprintf("%s[%d]", path, i), e, s.Index(i))
	}
	rv.Set(s)
}

func (l *loader) decodeMap(path string, v any, rv reflect.Value) {
	m, ok := v.(map[string]any)
	if !ok {
		l.errorf(path, "expected a table, got %s", describe(v))
		return
	}
	out := reflect.MakeMapWithSize(rv.Type(), len(m))
	for _, k := range sortedKeys(m) {
		e := reflect.New(rv.Type().Elem()).Elem()
		l.decode(joinKey(path, k), m[k], e)
		out.SetMapIndex(reflect.ValueOf(k), e)
	}
	rv.Set(out)
}

func (l *loader) decodeStruct(path string, v any, rv reflect.Value) {
	m, ok := v.(map[string]any)
	if !ok {
		l.errorf(path, "expected a table, got %s", describe(v))
		return
	}
	fields := tomlFields(rv.Type())
	for _, k := range sortedKeys(m) {
		key := joinKey(path, k)
		i, ok := fields[k]
		if !ok {
			msg := fmt.Sprintf("unknown key %q", key)
			if s := suggest(k, fields); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			l.report(key, "", msg)
			continue
		}
		l.decode(key, m[k], rv.Field(i))
	}
}

// tomlFields maps the TOML key of each tagged field of struct type t to
// its index. Keys match exactly: TOML keys are case-sensitive, and the
// case-folding fallback of BurntSushi/toml would quietly accept spellings
// the documentation never promised.
func tomlFields(t reflect.Type) map[string]int {
	fields := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if name != "" && name != "-" {
			fields[name] = i
		}
	}
	return fields
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// suggest returns the known key closest to an unknown one, if it is close
// enough to be a likely typo ("retrymin", "Retry_Min", "pasword").
func suggest(unknown string, known map[string]int) string {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
	}
	best, bestDist := "", 3
	for _, k := range sortedKeys(known) {
		if norm(k) == norm(unknown) {
			return k
		}
		if d := editDistance(k, unknown); d < bestDist && len(k) > 3 {
			best, bestDist = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// tomlType names the TOML type of a decoded value.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case time.Time:
		return "datetime"
	case []any, []map[string]any:
		return "array"
	case map[string]any:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

// describe is tomlType with the value for scalars, which is usually what
// makes the mistake obvious: `got string "587"`.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case int64, float64, bool:
		return fmt.Sprintf("%s %v", tomlType(v), v)
	}
	return tomlType(v)
}
