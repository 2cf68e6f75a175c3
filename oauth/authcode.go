package oauth

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/outboxmta/outbox/config"
)

// CodePrompt is what the user must do in the authorization code flow:
// open URL in a browser; the provider then sends the browser to
// RedirectURI, on the loopback port Port.
type CodePrompt struct {
	URL, RedirectURI string
	Port             int
}

// AuthorizeCode runs the authorization code grant with PKCE (RFC 7636,
// S256) and a loopback redirect (RFC 8252 section 7.3, Google's
// "installed app" flow) for the upstream u, for a server without a
// browser. It listens on 127.0.0.1:port (0: any free port), hands the
// authorization URL to show, and takes the answer from whichever comes
// first: the browser's redirect to the listener (same host, or through
// `ssh -L`), or a line read from paste holding the redirected URL (or just
// the code) that a browser elsewhere could not deliver. It checks the
// state, exchanges the code with the verifier, and stores the refresh
// token as Authorize does.
//
// A read from paste that is still blocked when the flow ends stays
// blocked: paste is meant to be the terminal of a command about to exit.
func AuthorizeCode(ctx context.Context, u config.Upstream, port int, paste io.Reader, show func(CodePrompt)) (Owner, error) {
	o := u.OAuth2
	if err := authorizable(u); err != nil {
		return Owner{}, err
	}
	if o.AuthURL == "" {
		return Owner{}, fmt.Errorf("upstream %s: set oauth2.auth_url, the provider's authorization endpoint (or use --flow=device)", u.Name)
	}
	c, err := clientConfig(o)
	if err != nil {
		return Owner{}, err
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return Owner{}, fmt.Errorf("loopback redirect: %w", err)
	}
	port = l.Addr().(*net.TCPAddr).Port
	c.RedirectURL = "http://127.0.0.1:" + strconv.Itoa(port) + "/"

	ctx, cancel := context.WithCancel(ctx)
	answers := make(chan answer)
	srv := &http.Server{Handler: redirectHandler(ctx, answers), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	defer func() {
		cancel()
		// Let the browser get its page before we exit.
		sctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		srv.Shutdown(sctx)
	}()
	go readPasted(ctx, paste, answers)

	state, verifier := rand.Text(), oauth2.GenerateVerifier()
	opts := []oauth2.AuthCodeOption{
		oauth2.S256ChallengeOption(verifier),
		oauth2.AccessTypeOffline, // Google: a refresh token
		oauth2.ApprovalForce,     // prompt=consent: Google sends the refresh token again
	}
	if strings.Contains(u.Username, "@") {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", u.Username))
	}
	show(CodePrompt{URL: c.AuthCodeURL(state, opts...), RedirectURI: c.RedirectURL, Port: port})

	var a answer
	select {
	case a = <-answers:
	case <-ctx.Done():
		return Owner{}, context.Cause(ctx)
	}
	var owner Owner
	err = a.unusable
	if err == nil {
		owner, err = finish(withHTTPClient(ctx), &c, o, a.redirect, state, verifier)
	}
	if a.done != nil {
		a.done <- err
	}
	return owner, err
}

// finish checks the redirect r, exchanges its code and stores the token.
func finish(ctx context.Context, c *oauth2.Config, o config.OAuth2, r redirect, state, verifier string) (Owner, error) {
	if r.state != state && !r.bare {
		// Not the answer to our request: a stale tab, or someone else's
		// code planted on us (RFC 6749 section 10.12).
		return Owner{}, errors.New("the redirect's state does not match this authorization request (an old browser tab, or a link from someone else); run the command again and use the URL it prints")
	}
	if r.err != "" {
		what := r.err
		if r.desc != "" {
			what += ": " + r.desc
		}
		if r.err == "access_denied" {
			return Owner{}, fmt.Errorf("the authorization was refused at the provider (%s): sign in as the upstream's user and allow access", what)
		}
		return Owner{}, fmt.Errorf("the provider answered with an error (%s)", what)
	}
	tok, err := c.Exchange(ctx, r.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return Owner{}, fmt.Errorf("exchanging the code at %s: %w", o.TokenURL, retrieveText(err))
	}
	return storeRefresh(o, tok)
}

// redirect is the provider's answer, from the redirect's query or the
// pasted text.
type redirect struct {
	code, state string
	err, desc   string // error, error_description
	bare        bool   // just a code was pasted: no state to check
}

// answer is a redirect as it arrived, or the reason a pasted line is
// none; done, if not nil, wants the outcome to show it in the browser.
type answer struct {
	redirect
	unusable error
	done     chan error
}

// parseRedirect reads the redirected URL, its query, or a bare code.
func parseRedirect(s string) (redirect, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return redirect{}, false
	}
	if !strings.Contains(s, "code=") && !strings.Contains(s, "error=") {
		// Google's codes hold '/', never '=' or spaces.
		return redirect{code: s, bare: true}, !strings.ContainsAny(s, " \t=?")
	}
	if _, q, ok := strings.Cut(s, "?"); ok {
		s = q
	}
	s, _, _ = strings.Cut(s, "#")
	q, err := url.ParseQuery(s)
	if err != nil {
		return redirect{}, false
	}
	return fromQuery(q)
}

func fromQuery(q url.Values) (redirect, bool) {
	r := redirect{code: q.Get("code"), state: q.Get("state"), err: q.Get("error"), desc: q.Get("error_description")}
	return r, r.code != "" || r.err != ""
}

// readPasted sends the first usable line of paste as an answer, and
// says so on a line that is not one.
func readPasted(ctx context.Context, paste io.Reader, answers chan<- answer) {
	if paste == nil {
		return
	}
	sc := bufio.NewScanner(paste)
	sc.Buffer(nil, 64<<10)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		a := answer{}
		var ok bool
		if a.redirect, ok = parseRedirect(sc.Text()); !ok {
			a.unusable = errors.New("the pasted text is not a redirected URL: paste the whole address the browser was sent to (http://127.0.0.1:PORT/?state=…&code=…), or just the code")
		}
		select {
		case answers <- a:
		case <-ctx.Done():
		}
		return
	}
}

// redirectHandler takes the browser's redirect to the loopback listener,
// hands it on as an answer and shows the outcome. Other requests (a
// favicon, someone opening the address by hand) are not answers.
func redirectHandler(ctx context.Context, answers chan<- answer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rd, ok := fromQuery(r.URL.Query())
		if r.URL.Path != "/" || !ok {
			http.NotFound(w, r)
			return
		}
		a := answer{redirect: rd, done: make(chan error, 1)}
		select {
		case answers <- a:
		case <-ctx.Done():
			http.Error(w, "Outbox is no longer waiting for this authorization.", http.StatusGone)
			return
		}
		err := <-a.done // always sent once the answer is taken
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "<!doctype html><title>Outbox</title><p>Outbox could not complete the authorization: %s</p>\n", html.EscapeString(err.Error()))
			return
		}
		fmt.Fprint(w, "<!doctype html><title>Outbox</title><p>Outbox stored the authorization. You can close this tab.</p>\n")
	})
}
