package stepup

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	duoapi "github.com/duosecurity/duo_api_golang"
	"github.com/duosecurity/duo_api_golang/authapi"
)

// userAgent goes before the library's own "duo_api_golang/x.y.z".
const userAgent = "crm-mcp/stepup"

// maxResponse bounds a Duo answer. Real ones are a few hundred bytes; the
// library reads bodies with no limit, so a broken proxy could feed it
// without end.
const maxResponse = 1 << 20

// dialTimeout bounds a TCP connect and, separately, a TLS handshake.
const dialTimeout = 10 * time.Second

// firstBackoff is the wait after a 429 without Retry-After; it doubles on
// each further 429, always within the caller's deadline.
const firstBackoff = time.Second

// duoClient wraps duo_api_golang.
//
// The library has no context.Context and no deadline of its own on the
// calls we make, and on HTTP 429 it sleeps up to a minute and resends POSTs
// with an empty body. We keep control as follows, with no extra goroutine:
//
//   - Each library call runs on a private copy of the configured AuthApi
//     value whose http.Client has a fresh callTransport bound to that call's
//     context. callTransport sends the library's request with that context
//     (req.WithContext), so a cancelled caller or a passed deadline aborts
//     the dial, the TLS handshake, the write and the body read, and the
//     library call returns at once. Copying the struct per call also means
//     concurrent calls never share mutable client state.
//   - callTransport turns a 429 into an error (*rateLimitedError), which the
//     library returns to us unretried; do waits as Retry-After says (within
//     the deadline) and calls the library again, which builds and signs a
//     complete new request.
//     No goroutine is started per call, so none can leak; the one
//     background activity is net/http finishing an abandoned dial, which
//     dialTimeout bounds.
//   - callTransport records the HTTP status, so a 401 whose body is not Duo
//     JSON is still reported as a credentials problem.
//
// Errors carry nothing secret: the library puts the secret key only into
// the Authorization header, and neither net/http errors nor ours include
// headers.
type duoClient struct {
	api    authapi.AuthApi   // template, copied per call; never called itself
	base   http.RoundTripper // the real transport
	client http.Client       // template for the per-call clients
	userID bool              // send user_id instead of username
	// customRoots: the TLS roots are the CA file's (Config.CACertPEM),
	// not Duo's pinned bundle; a trust failure names the file.
	customRoots bool
}

func newDuoClient(cfg *Config) (*duoClient, error) {
	c := &duoClient{userID: cfg.UseUserID}
	var pool *x509.CertPool
	if cfg.HTTPClient == nil && len(cfg.CACertPEM) > 0 {
		p, err := parseRoots(cfg.CACertPEM)
		if err != nil {
			return nil, &FieldError{Field: "CACertPEM", Err: err}
		}
		pool = p
		c.customRoots = true
	}

	// The library builds an *http.Transport that trusts only Duo's pinned
	// CA bundle and honours HTTPS_PROXY. SetTransport lets us see it: we
	// keep it as our base transport (the per-call clients replace the
	// library's own) and, only when asked, swap its roots.
	var libTransport *http.Transport
	api := duoapi.NewDuoApi(cfg.IKey, cfg.SKey, cfg.Host, userAgent,
		duoapi.SetTransport(func(t *http.Transport) {
			libTransport = t
			if pool != nil {
				t.TLSClientConfig.RootCAs = pool
			}
			// net/http finishes a dial in the background after the request
			// that started it is cancelled (to reuse the connection), so
			// the dial and handshake need bounds of their own; the library
			// sets none. No response-header timeout: auth_status may
			// long-poll, and the caller's deadline bounds it anyway.
			t.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
			t.TLSHandshakeTimeout = dialTimeout
			t.IdleConnTimeout = 90 * time.Second
		}))
	c.api = *authapi.NewAuthApi(*api)

	switch {
	case cfg.HTTPClient != nil:
		c.base = cfg.HTTPClient.Transport
		if c.base == nil {
			c.base = http.DefaultTransport
		}
	case libTransport != nil:
		c.base = libTransport
	default:
		// Only if a future library version stopped calling SetTransport's
		// function: failing beats silently trusting the system roots.
		return nil, errors.New("stepup: duo_api_golang did not expose its transport")
	}
	// Duo never redirects; following one would send a signed request
	// somewhere else. The 3xx then fails JSON decoding: Unavailable.
	c.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, nil
}

// parseRoots reads PEM certificates strictly: every block must be a
// certificate that parses, and there must be at least one. A typo must not
// leave us with an empty pool that nobody notices until the first push.
func parseRoots(data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if strings.TrimSpace(string(rest)) != "" {
				return nil, errors.New("has data that is not PEM")
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("has a %q block; only CERTIFICATE blocks are allowed", truncate(block.Type))
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %v", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, errors.New("holds no certificate")
	}
	return pool, nil
}

// callTransport binds one library call to a context. It is used by one
// goroutine at a time (the library calls Do synchronously), so status needs
// no lock.
type callTransport struct {
	ctx    context.Context
	base   http.RoundTripper
	status int // HTTP status of the last answer; 0 if none
}

func (t *callTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.ctx.Err(); err != nil {
		// Not every RoundTripper looks at the context before sending.
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	resp, err := t.base.RoundTrip(req.WithContext(t.ctx))
	if err != nil {
		return nil, err
	}
	t.status = resp.StatusCode
	if resp.StatusCode == http.StatusTooManyRequests {
		wait := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
		resp.Body.Close()
		return nil, &rateLimitedError{retryAfter: wait}
	}
	resp.Body = limitedBody{io.LimitReader(resp.Body, maxResponse), resp.Body}
	return resp, nil
}

type limitedBody struct {
	io.Reader
	io.Closer
}

// rateLimitedError is how a 429 leaves callTransport, so that the library
// does not retry it by itself.
type rateLimitedError struct {
	retryAfter time.Duration // 0: no usable Retry-After
}

func (e *rateLimitedError) Error() string { return "Duo answered 429 Too Many Requests" }

// parseRetryAfter reads delay-seconds or an HTTP-date (RFC 9110 section
// 10.2.3). It returns 0 when the header is missing or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(24*time.Hour/time.Second) {
			return 24 * time.Hour // anything this long is past every deadline anyway
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// do runs one library call, bound to ctx, and retries it after a 429 while
// the deadline allows. subject names the protected call in messages ("tool
// x"). It returns nil when Duo answered stat OK; otherwise an *Error, or
// ctx.Err() itself when ctx ended, so that the caller can say what it was
// waiting for.
func (c *duoClient) do(ctx context.Context, subject string, call func(api *authapi.AuthApi) (*duoapi.StatResult, error)) error {
	backoff := firstBackoff
	for {
		tr := &callTransport{ctx: ctx, base: c.base}
		hc := c.client
		hc.Transport = tr
		api := c.api
		api.SetCustomHTTPClient(&hc)

		stat, err := call(&api)
		if err == nil {
			if stat.Stat == "OK" {
				return nil
			}
			return failure(stat, tr.status, subject)
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		var rl *rateLimitedError
		if !errors.As(err, &rl) {
			return transportFailure(err, tr.status, subject, c.customRoots)
		}
		wait := rl.retryAfter
		if wait <= 0 {
			wait = backoff
			backoff *= 2
		}
		if dl, ok := ctx.Deadline(); ok && time.Now().Add(wait).After(dl) {
			return newError(RateLimited, err,
				"Duo is rate-limiting this server and asked to wait %s, longer than this request may take, so %s was not run. Retry later.",
				wait.Round(time.Second), subject)
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
	}
}

// failure maps Duo's FAIL envelope. Duo's messages hold no secrets, so they
// are quoted for the administrator.
func failure(stat *duoapi.StatResult, status int, subject string) *Error {
	code := 0
	if stat.Code != nil {
		code = int(*stat.Code)
	}
	msg := "no message"
	if stat.Message != nil && *stat.Message != "" {
		msg = *stat.Message
	}
	if stat.Message_Detail != nil && *stat.Message_Detail != "" {
		msg += " (" + *stat.Message_Detail + ")"
	}
	// 401xx: missing or wrong credentials, bad signature, bad Date.
	// 403xx: the integration may not use this API (an Admin API key, say).
	if status == http.StatusUnauthorized || status == http.StatusForbidden || code/100 == 401 || code/100 == 403 {
		return newError(Misconfigured, nil,
			"Duo rejected this server's credentials (Duo code %d: %s), so %s was not run; %s.", code, msg, subject, adminHint)
	}
	return newError(Unavailable, nil,
		"Duo answered with an error (HTTP %d, Duo code %d: %s), so %s was not run. Retry later; if it persists, the administrator should look at the server log.",
		status, code, msg, subject)
}

// transportFailure maps a non-nil error from the library: the network, TLS,
// or a body that is not Duo's JSON.
func transportFailure(err error, status int, subject string, customRoots bool) *Error {
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		return newError(Misconfigured, err,
			"Duo rejected this server's credentials (HTTP %d), so %s was not run; %s.", status, subject, adminHint)
	}
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if status != 0 && (errors.As(err, &syntax) || errors.As(err, &typ) || errors.Is(err, io.ErrUnexpectedEOF)) {
		return newError(Unavailable, err,
			"Duo answered HTTP %d with something that is not a Duo API answer, so %s was not run. Retry later; if it persists, check the network path to Duo.",
			status, subject)
	}
	// A certificate this server does not trust: say which trust failed and
	// name the setting that fixes it. Still Unavailable: it may as well be
	// someone in the network path answering for Duo.
	var unknownCA x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	var host x509.HostnameError
	switch {
	case errors.As(err, &host):
		return newError(Unavailable, err,
			"Duo's TLS certificate does not name the host this server called (%v), so %s was not run; the administrator must check DUO_AUTH_HOST.",
			host.Error(), subject)
	case (errors.As(err, &unknownCA) || errors.As(err, &verify)) && customRoots:
		return newError(Unavailable, err,
			"Duo's TLS certificate is not signed by a CA in DUO_AUTH_CA_FILE, so %s was not run; the administrator must point DUO_AUTH_CA_FILE at the CA that signs the certificate DUO_AUTH_HOST presents (a TLS-inspecting proxy's), or unset it to trust Duo's own CAs.",
			subject)
	case errors.As(err, &unknownCA) || errors.As(err, &verify):
		return newError(Unavailable, err,
			"Duo's TLS certificate is not signed by one of Duo's own CAs, which this server trusts by default, so %s was not run; if a TLS-inspecting proxy or a stand-in answers for DUO_AUTH_HOST, the administrator must set DUO_AUTH_CA_FILE to the CA that signs its certificate.",
			subject)
	}
	// A *url.Error repeats method and URL; the inner error is what helps.
	var ue *url.Error
	cause := err
	if errors.As(err, &ue) {
		cause = ue.Err
	}
	return newError(Unavailable, err,
		"Duo could not be reached (%v), so %s was not run. Retry later; if it persists, the administrator should check the network path to DUO_AUTH_HOST.",
		cause, subject)
}

// userOpt returns the option naming the user, as username or user_id.
func (c *duoClient) userOpt(user string, username, userID func(string) func(*url.Values)) func(*url.Values) {
	if c.userID {
		return userID(user)
	}
	return username(user)
}

type preauthAnswer struct {
	result, statusMsg, enrollURL string
}

func (c *duoClient) preauth(ctx context.Context, req Request, subject string) (preauthAnswer, error) {
	var ans preauthAnswer
	err := c.do(ctx, subject, func(api *authapi.AuthApi) (*duoapi.StatResult, error) {
		opts := []func(*url.Values){c.userOpt(req.User, authapi.PreauthUsername, authapi.PreauthUserId)}
		if req.RemoteIP != "" {
			opts = append(opts, authapi.PreauthIpAddr(req.RemoteIP))
		}
		res, err := api.Preauth(opts...)
		if err != nil {
			return nil, err
		}
		ans = preauthAnswer{res.Response.Result, res.Response.Status_Msg, res.Response.Enroll_Portal_Url}
		return &res.StatResult, nil
	})
	return ans, err
}

// authAnswer is the answer to an auth call: a txid (async), or, should Duo
// decide at once, a result.
type authAnswer struct {
	txid                      string
	result, status, statusMsg string
}

func (c *duoClient) auth(ctx context.Context, req Request, pushType, pushinfo, subject string) (authAnswer, error) {
	var ans authAnswer
	err := c.do(ctx, subject, func(api *authapi.AuthApi) (*duoapi.StatResult, error) {
		opts := []func(*url.Values){
			c.userOpt(req.User, authapi.AuthUsername, authapi.AuthUserId),
			authapi.AuthDevice("auto"),
			authapi.AuthAsync(),
			authapi.AuthType(pushType),
			authapi.AuthDisplayUsername(req.User),
			authapi.AuthPushinfo(pushinfo),
		}
		if req.RemoteIP != "" {
			opts = append(opts, authapi.AuthIpAddr(req.RemoteIP))
		}
		res, err := api.Auth("push", opts...)
		if err != nil {
			return nil, err
		}
		r := res.Response
		ans = authAnswer{r.Txid, r.Result, r.Status, r.Status_Msg}
		return &res.StatResult, nil
	})
	return ans, err
}

func (c *duoClient) authStatus(ctx context.Context, txid, subject string) (authAnswer, error) {
	var ans authAnswer
	err := c.do(ctx, subject, func(api *authapi.AuthApi) (*duoapi.StatResult, error) {
		res, err := api.AuthStatus(txid)
		if err != nil {
			return nil, err
		}
		r := res.Response
		ans = authAnswer{txid, r.Result, r.Status, r.Status_Msg}
		return &res.StatResult, nil
	})
	return ans, err
}

// check calls the signed /auth/v2/check and returns Duo's clock.
func (c *duoClient) check(ctx context.Context, subject string) (time.Time, error) {
	var t time.Time
	err := c.do(ctx, subject, func(api *authapi.AuthApi) (*duoapi.StatResult, error) {
		res, err := api.Check()
		if err != nil {
			return nil, err
		}
		t = time.Unix(res.Response.Time, 0)
		return &res.StatResult, nil
	})
	return t, err
}
