package sendmail

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	deliver := func(o Options) *Options { o.Mode = ModeDeliver; return &o }
	tests := []struct {
		name  string
		args  []string
		want  *Options
		warns []string
	}{
		{
			name: "debian cron",
			args: []string{"-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"},
			want: deliver(Options{FullName: "CronDaemon", IgnoreDots: true, BodyType: "8BITMIME", Recipients: []string{"root"}}),
		},
		{
			name: "cronie",
			args: []string{"-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"},
			want: deliver(Options{FullName: "CronDaemon", IgnoreDots: true, ExtractRecipients: true, Sender: "root", SenderSet: true}),
		},
		{
			name: "php default",
			args: []string{"-t", "-i"},
			want: deliver(Options{ExtractRecipients: true, IgnoreDots: true}),
		},
		{
			name: "mailx",
			args: []string{"-i", "--", "user@example.com"},
			want: deliver(Options{IgnoreDots: true, Recipients: []string{"user@example.com"}}),
		},
		{
			name: "dash dash protects a recipient that looks like an option",
			args: []string{"--", "-weird"},
			want: deliver(Options{Recipients: []string{"-weird"}}),
		},
		{
			name: "lone dash ends options",
			args: []string{"-t", "-", "a@x"},
			want: deliver(Options{ExtractRecipients: true, Recipients: []string{"a@x"}}),
		},
		{
			name: "attached sender",
			args: []string{"-fuser@x", "a@x"},
			want: deliver(Options{Sender: "user@x", SenderSet: true, Recipients: []string{"a@x"}}),
		},
		{
			name: "separate sender",
			args: []string{"-f", "user@x", "a@x"},
			want: deliver(Options{Sender: "user@x", SenderSet: true, Recipients: []string{"a@x"}}),
		},
		{
			name: "-r is -f",
			args: []string{"-r", "<user@x>", "a@x"},
			want: deliver(Options{Sender: "user@x", SenderSet: true, Recipients: []string{"a@x"}}),
		},
		{
			name: "null sender empty",
			args: []string{"-f", "", "a@x"},
			want: deliver(Options{SenderSet: true, Recipients: []string{"a@x"}}),
		},
		{
			name: "null sender brackets",
			args: []string{"-f", "<>", "a@x"},
			want: deliver(Options{SenderSet: true, Recipients: []string{"a@x"}}),
		},
		{
			name: "null sender attached",
			args: []string{"-f<>", "a@x"},
			want: deliver(Options{SenderSet: true, Recipients: []string{"a@x"}}),
		},
		{
			name: "separate full name, config, body type",
			args: []string{"-F", "Cron Daemon", "-C", "/etc/outbox/o.toml", "-B", "7bit", "a@x"},
			want: deliver(Options{FullName: "Cron Daemon", ConfigFile: "/etc/outbox/o.toml", BodyType: "7BIT", Recipients: []string{"a@x"}}),
		},
		{
			name: "attached config",
			args: []string{"-C/tmp/x.toml", "a@x"},
			want: deliver(Options{ConfigFile: "/tmp/x.toml", Recipients: []string{"a@x"}}),
		},
		{
			name: "cluster ti",
			args: []string{"-ti"},
			want: deliver(Options{ExtractRecipients: true, IgnoreDots: true}),
		},
		{
			name: "cluster it with verbose twice",
			args: []string{"-itvv"},
			want: deliver(Options{ExtractRecipients: true, IgnoreDots: true, Verbose: true}),
		},
		{
			name: "cluster ending in a value option",
			args: []string{"-tif", "s@x"},
			want: deliver(Options{ExtractRecipients: true, IgnoreDots: true, Sender: "s@x", SenderSet: true}),
		},
		{
			name: "oi and t separate",
			args: []string{"-oi", "-t"},
			want: deliver(Options{ExtractRecipients: true, IgnoreDots: true}),
		},
		{
			name: "ignored options",
			args: []string{"-oee", "-oep", "-oeq", "-oew", "-odb", "-odq", "-om", "-o7", "-oXfoo", "-L", "label", "-n", "-U", "-G", "-h", "17", "-Lx", "-m", "-c", "a@x"},
			want: deliver(Options{Recipients: []string{"a@x"}}),
		},
		{
			name: "-O IgnoreDots",
			args: []string{"-O", "IgnoreDots=true", "-t"},
			want: deliver(Options{ExtractRecipients: true, IgnoreDots: true}),
		},
		{
			name:  "unknown option warns",
			args:  []string{"-Z", "-tK", "--frobnicate", "a@x"},
			want:  deliver(Options{ExtractRecipients: true, Recipients: []string{"a@x"}}),
			warns: []string{"sendmail: warning: ignoring unknown option -Z", "sendmail: warning: ignoring unknown option -K", "sendmail: warning: ignoring unknown option --frobnicate"},
		},
		{
			name: "dsn options",
			args: []string{"-N", "success, failure", "-R", "hdrs", "-V", "env-42", "a@x"},
			want: deliver(Options{DSNNotify: "SUCCESS,FAILURE", DSNReturn: "HDRS", EnvID: "env-42", Recipients: []string{"a@x"}}),
		},
		{
			name:  "bad dsn notify warns",
			args:  []string{"-Nnever,success", "a@x"},
			want:  deliver(Options{Recipients: []string{"a@x"}}),
			warns: []string{`sendmail: warning: ignoring bad -N option value "never,success"`},
		},
		{
			name: "comma lists",
			args: []string{"a@x, b@y", "c@z,d", `"Doe, John" <j@x>`, "e@x,,"},
			want: deliver(Options{Recipients: []string{"a@x", "b@y", "c@z", "d", `"Doe, John" <j@x>`, "e@x"}}),
		},
		{
			name: "group is not split",
			args: []string{"team: a@x, b@x;, c@x"},
			want: deliver(Options{Recipients: []string{"team: a@x, b@x;", "c@x"}}),
		},
		{name: "mailq", args: []string{"-bp"}, want: &Options{Mode: ModeList}},
		{name: "smtp", args: []string{"-bs"}, want: &Options{Mode: ModeSMTP}},
		{name: "separate b", args: []string{"-b", "s"}, want: &Options{Mode: ModeSMTP}},
		{name: "flush", args: []string{"-q"}, want: &Options{Mode: ModeFlush}},
		{name: "flush interval", args: []string{"-q30m"}, want: &Options{Mode: ModeFlush, QueueArg: "30m"}},
		{name: "flush site", args: []string{"-qRexample.com"}, want: &Options{Mode: ModeFlush, QueueArg: "Rexample.com"}},
		{name: "newaliases", args: []string{"-bi"}, want: &Options{Mode: ModeNewaliases}},
		{name: "newaliases -I", args: []string{"-I"}, want: &Options{Mode: ModeNewaliases}},
		{name: "version", args: []string{"--version"}, want: &Options{Mode: ModeVersion}},
		{name: "explicit deliver", args: []string{"-bp", "-bm", "a@x"}, want: deliver(Options{Recipients: []string{"a@x"}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warns, err := ParseArgs(tt.args)
			if err != nil {
				t.Fatalf("ParseArgs(%q): %v", tt.args, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseArgs(%q)\n got %+v\nwant %+v", tt.args, got, tt.want)
			}
			if !reflect.DeepEqual(warns, tt.warns) {
				t.Errorf("warnings: got %q, want %q", warns, tt.warns)
			}
		})
	}
}

func TestParseArgsErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string // substring of the message
	}{
		{"missing -f", []string{"-t", "-f"}, "sendmail: option -f requires an argument"},
		{"missing -F", []string{"-F"}, "option -F requires an argument"},
		{"missing -C", []string{"-C"}, "option -C requires an argument"},
		{"missing -B", []string{"-B"}, "option -B requires an argument"},
		{"missing -N", []string{"-N"}, "option -N requires an argument"},
		{"missing -R", []string{"-R"}, "option -R requires an argument"},
		{"missing -V", []string{"-V"}, "option -V requires an argument"},
		{"missing -L", []string{"-L"}, "option -L requires an argument"},
		{"missing -h", []string{"-h"}, "option -h requires an argument"},
		{"missing in cluster", []string{"-tf"}, "option -f requires an argument"},
		{"bad body type", []string{"-B", "binarymime", "a@x"}, "-B option needs 8BITMIME or 7BIT"},
		{"bad return", []string{"-R", "all", "a@x"}, "-R option needs full or hdrs"},
		{"bad envid", []string{"-V", "a\x01b", "a@x"}, "bad -V option value"},
		{"daemon", []string{"-bd"}, "use outbox serve"},
		{"daemon D", []string{"-bD"}, "use outbox serve"},
		{"verify", []string{"-bv", "a@x"}, "not supported"},
		{"unknown b mode", []string{"-bt"}, "unsupported option -bt"},
		{"no recipients", nil, "sendmail: no recipients specified (give addresses or use -t)"},
		{"only empty recipients", []string{",", ""}, "no recipients specified"},
		{"option after recipient", []string{"a@x", "-f", "s@x"}, "option -f must come before the recipients"},
		{"t outside delivery", []string{"-bp", "-t"}, "-t can be used only in delivery mode"},
		{"recipients with mailq", []string{"-bp", "a@x"}, "-bp mode takes no recipients"},
		{"recipients with flush", []string{"-q", "a@x"}, "-q mode takes no recipients"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseArgs(tt.args)
			var ee *ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("ParseArgs(%q): got %v, want an *ExitError", tt.args, err)
			}
			if ee.Code != ExUsage {
				t.Errorf("code %d, want %d", ee.Code, ExUsage)
			}
			if !strings.Contains(ee.Msg, tt.msg) || !strings.HasPrefix(ee.Msg, "sendmail: ") {
				t.Errorf("message %q, want it to contain %q", ee.Msg, tt.msg)
			}
		})
	}
}

func TestExitError(t *testing.T) {
	var err error = &ExitError{Code: ExTempFail, Msg: "sendmail: try later"}
	if err.Error() != "sendmail: try later" {
		t.Errorf("Error() = %q", err.Error())
	}
	codes := []int{ExOK, ExUsage, ExDataErr, ExNoUser, ExUnavailable, ExSoftware, ExCantCreat, ExIOErr, ExTempFail, ExConfig}
	want := []int{0, 64, 65, 67, 69, 70, 73, 74, 75, 78}
	if !reflect.DeepEqual(codes, want) {
		t.Errorf("exit codes %v, want sysexits.h %v", codes, want)
	}
}
