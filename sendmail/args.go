package sendmail

import (
	"fmt"
	"strings"
)

// Mode is what the command was asked to do.
type Mode int

const (
	ModeDeliver    Mode = iota // -bm (default): read a message and submit it
	ModeList                   // -bp: list the queue (mailq)
	ModeSMTP                   // -bs: speak SMTP on stdin/stdout
	ModeFlush                  // -q: attempt delivery of queued mail now
	ModeNewaliases             // -bi, -I: rebuild aliases (newaliases)
	ModeVersion                // -bV, --version: print the version
)

// String returns the option that selects m.
func (m Mode) String() string {
	switch m {
	case ModeDeliver:
		return "-bm"
	case ModeList:
		return "-bp"
	case ModeSMTP:
		return "-bs"
	case ModeFlush:
		return "-q"
	case ModeNewaliases:
		return "-bi"
	case ModeVersion:
		return "-bV"
	}
	return "Mode(?)"
}

// Options is the parsed command line.
type Options struct {
	Mode Mode

	// Recipients are the non-option arguments, comma-separated lists
	// split into single addresses, not yet qualified or validated.
	Recipients []string
	// ExtractRecipients (-t) takes recipients from To:, Cc: and Bcc:, in
	// addition to Recipients.
	ExtractRecipients bool
	// IgnoreDots (-i, -oi): a line with a single "." does not end input.
	IgnoreDots bool

	// Sender is the envelope sender from -f or -r, with any angle brackets
	// removed, not yet qualified. SenderSet says -f/-r was given at all, so
	// that SenderSet with Sender == "" is the null sender ("-f <>").
	Sender    string
	SenderSet bool
	FullName  string // -F
	// ConfigFile is -C; "" means the default.
	ConfigFile string

	// BodyType is -B in upper case: "", "7BIT" or "8BITMIME".
	BodyType string
	// DSNNotify is -N in upper case: "", "NEVER" or a comma-separated
	// subset of SUCCESS, DELAY, FAILURE, ready for RCPT TO NOTIFY=.
	DSNNotify string
	// DSNReturn is -R in upper case: "", "FULL" or "HDRS" (MAIL FROM RET=).
	DSNReturn string
	// EnvID is -V, the DSN envelope identifier (MAIL FROM ENVID=, before
	// xtext encoding).
	EnvID string

	// QueueArg is whatever was attached to -q ("30m", "Rsite"), which a
	// local relay has no use for but a caller may log.
	QueueArg string
	Verbose  bool // -v
}

// Options that take a value, attached ("-fuser") or as the next argument
// ("-f user"), as getopt(3) does for Postfix. -q is handled separately: its
// value is optional and only ever attached.
const valueOptions = "BCFLNORVXbefhopr"

// ParseArgs parses the sendmail command line (without argv[0]) with the
// semantics of Postfix's sendmail(1). Options are only recognised before
// the first recipient, as with Postfix. Unknown options produce a warning
// rather than an error, since programs pass Sendmail options that are
// irrelevant to a relay; the warnings are returned for the caller to print.
// The result has been checked with Validate.
func ParseArgs(args []string) (*Options, []string, error) {
	p := argParser{opts: &Options{Mode: ModeDeliver}}
	i, dashdash := 0, false
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" || a == "-" {
			i, dashdash = i+1, true
			break
		}
		if a == "--version" {
			p.opts.Mode = ModeVersion
			continue
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		if strings.HasPrefix(a, "--") {
			p.warn("ignoring unknown option " + a)
			continue
		}
		next, err := p.cluster(a, args[i+1:])
		if err != nil {
			return nil, nil, err
		}
		i += next
	}
	for _, a := range args[i:] {
		// Without "--" an option here was meant as one but would be taken
		// for an address; Postfix stops parsing options at the first
		// recipient too, so say so instead of failing on "-f" later.
		if !dashdash && len(a) > 1 && a[0] == '-' {
			return nil, nil, exitf(ExUsage, "option %s must come before the recipients", a)
		}
		p.opts.Recipients = append(p.opts.Recipients, splitList(a)...)
	}
	if err := p.opts.Validate(); err != nil {
		return nil, nil, err
	}
	return p.opts, p.warnings, nil
}

type argParser struct {
	opts     *Options
	warnings []string
}

func (p *argParser) warn(msg string) {
	p.warnings = append(p.warnings, "sendmail: warning: "+msg)
}

// cluster handles one argument of options such as "-ti" or "-fuser" and
// returns how many of the following arguments it consumed as a value.
func (p *argParser) cluster(a string, rest []string) (int, error) {
	for j := 1; j < len(a); j++ {
		c := a[j]
		if c == 'q' {
			p.opts.Mode = ModeFlush
			p.opts.QueueArg = a[j+1:]
			return 0, nil
		}
		if strings.IndexByte(valueOptions, c) >= 0 {
			if j+1 < len(a) {
				return 0, p.value(c, a[j+1:])
			}
			if len(rest) == 0 {
				return 0, exitf(ExUsage, "option -%c requires an argument", c)
			}
			return 1, p.value(c, rest[0])
		}
		switch c {
		case 't':
			p.opts.ExtractRecipients = true
		case 'i':
			p.opts.IgnoreDots = true
		case 'v':
			p.opts.Verbose = true
		case 'I':
			p.opts.Mode = ModeNewaliases
		case 'G', 'U', 'c', 'm', 'n', 'x':
			// Gateway submission, initial user submission, connection
			// caching, "me too", no aliasing, and -x: meaningless for a
			// relay but harmless, so accepted silently as Postfix does.
		default:
			p.warn("ignoring unknown option -" + string(c))
		}
	}
	return 0, nil
}

// value applies option c with value v.
func (p *argParser) value(c byte, v string) error {
	o := p.opts
	switch c {
	case 'b':
		return p.mode(v)
	case 'f', 'r':
		o.SenderSet = true
		o.Sender = strings.TrimSpace(v)
		// "-f <>" and "-f ''" are the null sender; "-f <user@x>" is user@x.
		if len(o.Sender) >= 2 && o.Sender[0] == '<' && o.Sender[len(o.Sender)-1] == '>' {
			o.Sender = strings.TrimSpace(o.Sender[1 : len(o.Sender)-1])
		}
	case 'F':
		o.FullName = v
	case 'C':
		o.ConfigFile = v
	case 'B':
		switch t := strings.ToUpper(v); t {
		case "7BIT", "8BITMIME":
			o.BodyType = t
		default:
			return exitf(ExUsage, "-B option needs 8BITMIME or 7BIT, not %q", v)
		}
	case 'N':
		n, ok := dsnNotify(v)
		if !ok {
			// Postfix warns and goes on: the message matters more than
			// the notifications about it.
			p.warn(fmt.Sprintf("ignoring bad -N option value %q", v))
			return nil
		}
		o.DSNNotify = n
	case 'R':
		switch t := strings.ToUpper(v); t {
		case "FULL", "HDRS":
			o.DSNReturn = t
		default:
			return exitf(ExUsage, "-R option needs full or hdrs, not %q", v)
		}
	case 'V':
		// RFC 3461: at most 100 printable ASCII characters.
		if v == "" || len(v) > 100 || strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r > '~' }) {
			return exitf(ExUsage, "bad -V option value %q (1-100 printable ASCII characters)", v)
		}
		o.EnvID = v
	case 'o':
		// -oi is the only -oX option with a meaning here; -oe*, -od*,
		// -om, -o7, -o8 and the rest configure Sendmail itself.
		if v == "i" {
			o.IgnoreDots = true
		}
	case 'O':
		// Sendmail's long form of -oi.
		if name, val, _ := strings.Cut(v, "="); strings.EqualFold(name, "IgnoreDots") &&
			(val == "" || strings.EqualFold(val, "true")) {
			o.IgnoreDots = true
		}
	case 'L', 'X', 'e', 'h', 'p':
		// Syslog label, traffic log file, error mode, hop count, protocol:
		// ignored, as by Postfix, but their value must still be skipped.
	}
	return nil
}

// mode applies -b.
func (p *argParser) mode(v string) error {
	switch v {
	case "m":
		p.opts.Mode = ModeDeliver
	case "p":
		p.opts.Mode = ModeList
	case "s":
		p.opts.Mode = ModeSMTP
	case "i":
		p.opts.Mode = ModeNewaliases
	case "V":
		p.opts.Mode = ModeVersion
	case "d", "D", "l":
		return exitf(ExUsage, "-b%s: daemon mode is not available here: use outbox serve", v)
	case "v":
		return exitf(ExUsage, "-bv (verify addresses) is not supported")
	default:
		// Guessing at an unknown mode could deliver mail the caller only
		// meant to test, so refuse it.
		return exitf(ExUsage, "unsupported option -b%s", v)
	}
	return nil
}

// dsnNotify normalises a -N value: "never", or a comma-separated list of
// success, delay and failure.
func dsnNotify(v string) (string, bool) {
	words := strings.Split(strings.ToUpper(strings.ReplaceAll(v, " ", "")), ",")
	seen := map[string]bool{}
	for _, w := range words {
		switch w {
		case "NEVER":
			if len(words) != 1 {
				return "", false
			}
		case "SUCCESS", "DELAY", "FAILURE":
		default:
			return "", false
		}
		if seen[w] {
			return "", false
		}
		seen[w] = true
	}
	return strings.Join(words, ","), true
}

// Validate checks that the options make sense together, with Postfix's
// rules: recipients and -t belong to delivery mode only, and delivery
// needs somewhere to deliver to.
func (o *Options) Validate() error {
	if o.Mode != ModeDeliver {
		if o.ExtractRecipients {
			return exitf(ExUsage, "-t can be used only in delivery mode")
		}
		if len(o.Recipients) > 0 {
			return exitf(ExUsage, "%s mode takes no recipients", o.Mode)
		}
		return nil
	}
	if len(o.Recipients) == 0 && !o.ExtractRecipients {
		return exitf(ExUsage, "no recipients specified (give addresses or use -t)")
	}
	return nil
}
