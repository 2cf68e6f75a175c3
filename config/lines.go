package config

import (
	"strconv"
	"strings"
)

// BurntSushi/toml records key positions but does not export them, and its
// internal key names drop the index of [[array]] tables, so the position of
// upstream[1].port could not be told from upstream[0].port anyway. keyLines
// therefore finds them with a small scan of the (already parsed, so valid)
// source. It understands table headers, [[array]] headers with index
// counting, dotted and quoted keys, and skips values including multi-line
// strings and arrays. Keys inside inline tables are not recorded; lookups
// for them fall back to the line of the enclosing key.

// keyPart renders one key component the way TOML would need it written.
func keyPart(k string) string {
	if k == "" {
		return `""`
	}
	for _, r := range k {
		if r > 0x7f || !isBare(byte(r)) {
			return strconv.Quote(k)
		}
	}
	return k
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// joinKey appends a key component to a path: joinKey("spool", "dir") is "spool.dir".
func joinKey(path, k string) string {
	if path == "" {
		return keyPart(k)
	}
	return path + "." + keyPart(k)
}

// parentKey strips the last component: "upstream[1].port" → "upstream[1]"
// → "upstream" → "".
func parentKey(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if strings.HasSuffix(path, `"`) {
		// A quoted last component; find its opening quote.
		for i := len(path) - 2; i >= 0; i-- {
			if path[i] == '"' && (i == 0 || path[i-1] != '\\') {
				return strings.TrimSuffix(path[:i], ".")
			}
		}
		return ""
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// lineOf returns the line of path, or of its nearest ancestor that appears
// in the file (a defaulted key is reported at its table's header), or 0.
func lineOf(lines map[string]int, path string) int {
	for p := path; p != ""; p = parentKey(p) {
		if n, ok := lines[p]; ok {
			return n
		}
	}
	return 0
}

type lineScanner struct {
	src  string
	i    int
	line int
}

func keyLines(src string) map[string]int {
	s := &lineScanner{src: strings.TrimPrefix(src, "\uFEFF"), line: 1}
	lines := make(map[string]int)
	record := func(path string, line int) {
		if _, ok := lines[path]; !ok {
			lines[path] = line
		}
	}
	arrays := make(map[string]int) // [[name]] → occurrences so far
	table := ""
	for {
		s.skipBlank()
		if s.i >= len(s.src) {
			return lines
		}
		line := s.line
		switch {
		case strings.HasPrefix(s.src[s.i:], "[["):
			s.i += 2
			name := s.path("", nil)
			n := arrays[name]
			arrays[name]++
			table = name + "[" + strconv.Itoa(n) + "]"
			record(name, line)
			record(table, line)
			s.skipLine()
		case s.src[s.i] == '[':
			s.i++
			table = lastElement(s.path("", nil), arrays)
			record(table, line)
			s.skipLine()
		default:
			start := s.i
			key := s.path(table, func(p string) { record(p, line) })
			if s.i == start { // not a key: cannot happen in valid TOML
				s.skipLine()
				continue
			}
			s.skipValue(func(i int) { record(key+"["+strconv.Itoa(i)+"]", s.line) })
		}
	}
}

// lastElement makes a table header inside an array of tables name the
// array's last element, as TOML does: [upstream.oauth2] after the second
// [[upstream]] is upstream[1].oauth2.
func lastElement(table string, arrays map[string]int) string {
	for name, n := range arrays {
		if rest, ok := strings.CutPrefix(table, name+"."); ok && n > 0 {
			return name + "[" + strconv.Itoa(n-1) + "]." + rest
		}
	}
	return table
}

// path reads a dotted key and returns it joined onto base, calling each
// (if non-nil) for every prefix so that "spool.dir = …" also places "spool".
func (s *lineScanner) path(base string, each func(string)) string {
	p := base
	for {
		s.skipSpace()
		k, ok := s.keyPart()
		if !ok {
			return p
		}
		p = joinKey(p, k)
		if each != nil {
			each(p)
		}
		s.skipSpace()
		if s.i < len(s.src) && s.src[s.i] == '.' {
			s.i++
			continue
		}
		return p
	}
}

func (s *lineScanner) keyPart() (string, bool) {
	if s.i >= len(s.src) {
		return "", false
	}
	switch c := s.src[s.i]; {
	case c == '"':
		start := s.i
		s.skipBasicString()
		raw := s.src[start:s.i]
		if k, err := strconv.Unquote(raw); err == nil {
			return k, true
		}
		return strings.Trim(raw, `"`), true
	case c == '\'':
		start := s.i + 1
		end := strings.IndexByte(s.src[start:], '\'')
		if end < 0 {
			s.i = len(s.src)
			return s.src[start:], true
		}
		s.i = start + end + 1
		return s.src[start : start+end], true
	case isBare(c):
		start := s.i
		for s.i < len(s.src) && isBare(s.src[s.i]) {
			s.i++
		}
		return s.src[start:s.i], true
	}
	return "", false
}

// skipValue skips from "=" to the end of the value's last line. If the
// value is an array, it calls elem with the index of each element as the
// element starts, so that allow_networks[1] can be placed on its own line.
func (s *lineScanner) skipValue(elem func(int)) {
	depth := 0
	if s.i < len(s.src) && s.src[s.i] == '=' {
		s.i++
	}
	s.skipSpace()
	isArray := s.i < len(s.src) && s.src[s.i] == '['
	n, inElem := 0, false
	for s.i < len(s.src) {
		rest := s.src[s.i:]
		if isArray && depth == 1 && !inElem && !strings.ContainsRune(" \t\r\n#,]", rune(rest[0])) {
			elem(n)
			inElem = true
		}
		switch {
		case isArray && depth == 1 && rest[0] == ',':
			n++
			inElem = false
			s.i++
		case strings.HasPrefix(rest, `"""`):
			s.skipMultiline(`"""`, true)
		case strings.HasPrefix(rest, `'''`):
			s.skipMultiline(`'''`, false)
		case rest[0] == '"':
			s.skipBasicString()
		case rest[0] == '\'':
			s.i++
			for s.i < len(s.src) && s.src[s.i] != '\'' && s.src[s.i] != '\n' {
				s.i++
			}
			if s.i < len(s.src) && s.src[s.i] == '\'' {
				s.i++
			}
		case rest[0] == '#':
			for s.i < len(s.src) && s.src[s.i] != '\n' {
				s.i++
			}
		case rest[0] == '[' || rest[0] == '{':
			depth++
			s.i++
		case rest[0] == ']' || rest[0] == '}':
			depth--
			s.i++
		case rest[0] == '\n':
			s.line++
			s.i++
			if depth <= 0 {
				return
			}
		default:
			s.i++
		}
	}
}

// skipBasicString skips a one-line "…" string, honouring backslash escapes.
func (s *lineScanner) skipBasicString() {
	s.i++ // opening quote
	for s.i < len(s.src) {
		switch s.src[s.i] {
		case '\\':
			s.i += 2
			continue
		case '"':
			s.i++
			return
		case '\n':
			return
		}
		s.i++
	}
}

func (s *lineScanner) skipMultiline(delim string, escapes bool) {
	s.i += len(delim)
	for s.i < len(s.src) {
		switch {
		case escapes && s.src[s.i] == '\\':
			if s.i+1 < len(s.src) && s.src[s.i+1] == '\n' {
				s.line++
			}
			s.i += 2
			continue
		case strings.HasPrefix(s.src[s.i:], delim):
			s.i += len(delim)
			// Up to two more quotes belong to the content: """a""""" is `a""`.
			for n := 0; n < 2 && s.i < len(s.src) && s.src[s.i] == delim[0]; n++ {
				s.i++
			}
			return
		case s.src[s.i] == '\n':
			s.line++
		}
		s.i++
	}
}

func (s *lineScanner) skipSpace() {
	for s.i < len(s.src) && (s.src[s.i] == ' ' || s.src[s.i] == '\t') {
		s.i++
	}
}

// skipBlank skips whitespace, line ends and comments between statements.
func (s *lineScanner) skipBlank() {
	for s.i < len(s.src) {
		switch s.src[s.i] {
		case ' ', '\t', '\r':
			s.i++
		case '\n':
			s.line++
			s.i++
		case '#':
			s.skipLine()
		default:
			return
		}
	}
}

// skipLine skips to just past the next line end.
func (s *lineScanner) skipLine() {
	for s.i < len(s.src) {
		c := s.src[s.i]
		s.i++
		if c == '\n' {
			s.line++
			return
		}
	}
}
