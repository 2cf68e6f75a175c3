package sendmail

import "fmt"

// Exit statuses from sysexits.h. Programs that call sendmail (cron, PHP,
// mail clients) interpret these, so they follow what Postfix uses.
const (
	ExOK          = 0  // successful termination
	ExUsage       = 64 // command line usage error
	ExDataErr     = 65 // data format error
	ExNoUser      = 67 // addressee unknown
	ExUnavailable = 69 // service unavailable
	ExSoftware    = 70 // internal software error
	ExCantCreat   = 73 // can't create (user) output file
	ExIOErr       = 74 // input/output error
	ExTempFail    = 75 // temporary failure; user is invited to retry
	ExConfig      = 78 // configuration error
)

// ExitError is an error that should end the command with status Code after
// printing Msg.
type ExitError struct {
	Code int
	Msg  string
}

func (e *ExitError) Error() string { return e.Msg }

// exitf returns an *ExitError whose message is prefixed with "sendmail: ",
// the program name Postfix and Sendmail print on their diagnostics.
func exitf(code int, format string, args ...any) *ExitError {
	return &ExitError{Code: code, Msg: "sendmail: " + fmt.Sprintf(format, args...)}
}
