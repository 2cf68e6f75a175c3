package address

import "strings"

// Aliases rewrites local recipients, as the [aliases] table of the
// configuration says: `root = "admin@example.com"` sends root's mail (bare
// "root", or root at one of the local domains) to admin@example.com. A key
// may also be a whole address, or "*" for every local recipient without an
// alias of its own, and a value a comma-separated list. Aliases
// expand once: a target is never looked up again, so no loop is possible.
type Aliases struct {
	table  map[string][]string // lower-cased key: targets
	locals map[string]bool     // lower-cased local domains
}

// NewAliases returns the aliases in table; localDomains are the domains
// whose addresses count as local (the configured domain and hostname).
func NewAliases(table map[string]string, localDomains ...string) Aliases {
	a := Aliases{table: map[string][]string{}, locals: map[string]bool{}}
	for k, v := range table {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				a.table[strings.ToLower(k)] = append(a.table[strings.ToLower(k)], t)
			}
		}
	}
	for _, d := range localDomains {
		if d != "" {
			a.locals[strings.ToLower(d)] = true
		}
	}
	return a
}

// Expand returns the recipients addr stands for: its alias targets, or addr
// itself when it has no alias.
func (a Aliases) Expand(addr string) []string {
	key := strings.ToLower(addr)
	if t, ok := a.table[key]; ok {
		return t
	}
	local, domain, hasAt := splitAddress(key)
	if !hasAt || a.locals[domain] {
		if t, ok := a.table[local]; ok {
			return t
		}
		if t, ok := a.table["*"]; ok {
			return t // every other local recipient
		}
	}
	return []string{addr}
}
