package stepup_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden file; run go test -update")
	assert.Equal(t, string(want), got, "golden file %s differs; run go test -update if the change is intended", path)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// noSecret fails the test if s contains secret, without printing either.
func noSecret(t *testing.T, s, secret, what string) {
	t.Helper()
	if strings.Contains(s, secret) {
		t.Errorf("%s contains the secret key", what)
	}
}

// tlsEnv is a Guard talking to a duotest.Server over real TLS.
type tlsEnv struct {
	srv   *duotest.Server
	guard *stepup.Guard
	logs  *syncBuffer
}

// newTLS starts a fake Duo and a Guard that trusts only its certificate.
// Fields of cfg that name the integration are filled in.
func newTLS(t *testing.T, cfg stepup.Config) *tlsEnv {
	t.Helper()
	srv := duotest.NewServer()
	t.Cleanup(srv.Close)
	logs := &syncBuffer{}
	cfg.IKey, cfg.SKey, cfg.Host = srv.IKey(), srv.SKey(), srv.Host()
	if cfg.HTTPClient == nil && cfg.CACertPEM == nil {
		cfg.CACertPEM = srv.CACertPEM()
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 10 * time.Millisecond
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, err := stepup.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { noSecret(t, logs.String(), srv.SKey(), "the log") })
	return &tlsEnv{srv: srv, guard: g, logs: logs}
}

// tlsTransport trusts only srv, for tests that bring their own HTTPClient.
func tlsTransport(t *testing.T, srv *duotest.Server) *http.Transport {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(srv.CACertPEM()))
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
}

// hookTransport calls after once a response for path has come back, so a
// test can change the fake's script between two steps of one Approve.
type hookTransport struct {
	base  http.RoundTripper
	path  string
	after func()
}

func (h *hookTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.base.RoundTrip(req)
	if err == nil && req.URL.Path == h.path && h.after != nil {
		h.after()
	}
	return resp, err
}

func request(user string) stepup.Request {
	return stepup.Request{
		User:     user,
		Tool:     "list_contacts",
		Reason:   `query mentions "defence"`,
		Action:   `Search contacts for "defence contractors"`,
		Details:  []stepup.Detail{{Key: "limit", New: "10"}},
		ClientID: "https://agent.example/client.json",
		Key:      stepup.CanonicalKey("list_contacts", []byte(`{"query":"defence contractors","limit":10}`)),
	}
}

// requests returns the fake's requests to path.
func requests(d *duotest.Duo, path string) []duotest.Request {
	var out []duotest.Request
	for _, r := range d.Requests() {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func TestOutcomesOverTLS(t *testing.T) {
	tests := []struct {
		name    string
		script  func(s *duotest.Server)
		cfg     stepup.Config
		want    stepup.Outcome // "" for approved
		pushes  int
		msgHas  []string
		logHas  string
		maxTime time.Duration // 0: no check
	}{
		{name: "approve", script: func(s *duotest.Server) { s.Script("alice", duotest.Approve) }, pushes: 1, logHas: "approved by Duo Push"},
		{name: "deny", script: func(s *duotest.Server) { s.Script("alice", duotest.Deny) }, want: stepup.Denied, pushes: 1, msgHas: []string{"denied", "tool list_contacts", "1m0s"}},
		{name: "default is deny", script: func(*duotest.Server) {}, want: stepup.Denied, pushes: 1},
		{name: "fraud", script: func(s *duotest.Server) { s.Script("alice", duotest.Fraud) }, want: stepup.Fraud, pushes: 1, msgHas: []string{"fraud"}, logHas: "reported as fraud"},
		{name: "duo timeout", script: func(s *duotest.Server) { s.Script("alice", duotest.Timeout) }, want: stepup.TimedOut, pushes: 1, msgHas: []string{"not answered in time"}},
		{name: "enroll", script: func(s *duotest.Server) { s.Script("alice", duotest.Enroll) }, want: stepup.Enroll, msgHas: []string{"Enroll at https://127.0.0.1:", "/portal?code="}},
		{name: "preauth allow is a bypass", script: func(s *duotest.Server) { s.Script("alice", duotest.PreauthAllow) }, logHas: "Duo bypass: approving without push"},
		{name: "preauth deny", script: func(s *duotest.Server) { s.Script("alice", duotest.PreauthDeny) }, want: stepup.PreauthDenied, msgHas: []string{"Access denied by policy.", "administrator"}},
		{name: "locked out at preauth", script: func(s *duotest.Server) { s.Script("alice", duotest.LockedOut) }, want: stepup.PreauthDenied, msgHas: []string{"locked out"}},
		{name: "401", script: func(s *duotest.Server) { s.Script("alice", duotest.Unauthorized401) }, want: stepup.Misconfigured, msgHas: []string{"40103", "DUO_AUTH_SKEY"}, logHas: "Duo failed"},
		{name: "500", script: func(s *duotest.Server) { s.Script("alice", duotest.ServerError500) }, want: stepup.Unavailable, msgHas: []string{"HTTP 500"}},
		{
			name: "429 then approve",
			script: func(s *duotest.Server) {
				s.Script("alice", duotest.RateLimited429, duotest.Times(1), duotest.RetryAfter(1))
				s.Script("alice", duotest.Approve)
			},
			pushes: 1,
		},
		{
			name:    "429 past the deadline",
			script:  func(s *duotest.Server) { s.Script("alice", duotest.RateLimited429, duotest.RetryAfter(120)) },
			cfg:     stepup.Config{Timeout: 5 * time.Second},
			want:    stepup.RateLimited,
			msgHas:  []string{"rate-limiting", "2m0s"},
			maxTime: 2 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTLS(t, tt.cfg)
			tt.script(env.srv)
			var progress []string
			start := time.Now()
			err := env.guard.Approve(t.Context(), request("alice"), func(m string) { progress = append(progress, m) })
			if tt.maxTime > 0 {
				assert.Less(t, time.Since(start), tt.maxTime, "Approve took too long")
			}
			if tt.want == "" {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				var se *stepup.Error
				require.ErrorAs(t, err, &se)
				assert.Equal(t, tt.want, se.Outcome, "outcome; message: %s", se.Msg)
				assert.True(t, stepup.IsOutcome(err, tt.want))
				for _, s := range tt.msgHas {
					assert.Contains(t, se.Msg, s)
				}
				noSecret(t, err.Error(), env.srv.SKey(), "the error")
			}
			assert.Len(t, env.srv.Pushes(), tt.pushes, "pushes")
			require.NotEmpty(t, progress)
			assert.Equal(t, "Waiting for Duo Push approval on your phone (tool list_contacts)", progress[0])
			if tt.logHas != "" {
				assert.Contains(t, env.logs.String(), tt.logHas)
			}
			for _, r := range env.srv.Requests() {
				assert.True(t, r.SignatureOK || r.Status == http.StatusTooManyRequests || r.Status == http.StatusUnauthorized,
					"%s %s: signature not verified", r.Method, r.Path)
			}
		})
	}
}

// The library would resend a rate-limited POST with an empty body; ours
// must be a complete, freshly signed request.
func TestRateLimitedRetrySendsFullBody(t *testing.T) {
	env := newTLS(t, stepup.Config{})
	env.srv.Script("alice", duotest.RateLimited429, duotest.Times(1), duotest.RetryAfter(1))
	env.srv.Script("alice", duotest.Approve)
	start := time.Now()
	require.NoError(t, env.guard.Approve(t.Context(), request("alice"), nil))
	assert.GreaterOrEqual(t, time.Since(start), time.Second, "Retry-After was not honoured")

	pre := requests(env.srv.Duo, "/auth/v2/preauth")
	require.Len(t, pre, 2)
	assert.Equal(t, http.StatusTooManyRequests, pre[0].Status)
	assert.Equal(t, http.StatusOK, pre[1].Status)
	assert.True(t, pre[1].SignatureOK)
	assert.Equal(t, pre[0].Params, pre[1].Params)
	assert.Equal(t, "alice", pre[1].Params.Get("username"))
	assert.Len(t, env.srv.Pushes(), 1)
}

func TestWrongSecretKeyIsMisconfigured(t *testing.T) {
	srv := duotest.NewServer()
	t.Cleanup(srv.Close)
	srv.Script("alice", duotest.Approve)
	const wrong = "WRONGwrongWRONGwrongWRONGwrongWRONGwrong"
	g, err := stepup.New(stepup.Config{IKey: srv.IKey(), SKey: wrong, Host: srv.Host(), CACertPEM: srv.CACertPEM()})
	require.NoError(t, err)

	err = g.Approve(t.Context(), request("alice"), nil)
	require.True(t, stepup.IsOutcome(err, stepup.Misconfigured), "got %v", err)
	assert.Contains(t, err.Error(), "DUO_AUTH_IKEY")
	noSecret(t, err.Error(), wrong, "the error")
	noSecret(t, err.Error(), srv.SKey(), "the error")

	err = g.Check(t.Context())
	require.True(t, stepup.IsOutcome(err, stepup.Misconfigured), "got %v", err)
	noSecret(t, err.Error(), wrong, "the error")
	assert.Empty(t, srv.Pushes())
}

func TestCheck(t *testing.T) {
	env := newTLS(t, stepup.Config{})
	require.NoError(t, env.guard.Check(t.Context()))
	checks := requests(env.srv.Duo, "/auth/v2/check")
	require.Len(t, checks, 1)
	assert.True(t, checks[0].SignatureOK)
}

func TestDuoNotListening(t *testing.T) {
	srv := duotest.NewServer()
	host, pem := srv.Host(), srv.CACertPEM()
	srv.Close()
	g, err := stepup.New(stepup.Config{IKey: "DIXXXXXXXXXXXXXXXXXX", SKey: "secret", Host: host, CACertPEM: pem})
	require.NoError(t, err)

	err = g.Approve(t.Context(), request("alice"), nil)
	require.True(t, stepup.IsOutcome(err, stepup.Unavailable), "got %v", err)
	assert.Contains(t, err.Error(), "could not be reached")
	assert.True(t, stepup.IsOutcome(g.Check(t.Context()), stepup.Unavailable))
}

func TestCACerts(t *testing.T) {
	t.Run("pinned Duo CAs refuse the fake", func(t *testing.T) {
		srv := duotest.NewServer()
		t.Cleanup(srv.Close)
		srv.Script("alice", duotest.Approve)
		g, err := stepup.New(stepup.Config{IKey: srv.IKey(), SKey: srv.SKey(), Host: srv.Host()})
		require.NoError(t, err)
		err = g.Approve(t.Context(), request("alice"), nil)
		require.True(t, stepup.IsOutcome(err, stepup.Unavailable), "got %v", err)
		assert.Contains(t, err.Error(), "certificate")
		assert.Contains(t, err.Error(), "set DUO_AUTH_CA_FILE", "a trust failure names the setting that fixes it")
		assert.Empty(t, srv.Pushes())
		assert.Empty(t, srv.Requests(), "a request got through the TLS handshake")
	})
	t.Run("CACertPEM of the fake", func(t *testing.T) {
		env := newTLS(t, stepup.Config{})
		env.srv.Script("alice", duotest.Approve)
		require.NoError(t, env.guard.Approve(t.Context(), request("alice"), nil))
		assert.Contains(t, env.logs.String(), "instead of Duo's pinned CA bundle")
	})
	t.Run("CACertPEM of another CA", func(t *testing.T) {
		// Every httptest server has the same certificate, so another
		// duotest.Server would not do: make a CA of our own.
		env := newTLS(t, stepup.Config{CACertPEM: selfSignedPEM(t)})
		env.srv.Script("alice", duotest.Approve)
		err := env.guard.Approve(t.Context(), request("alice"), nil)
		assert.True(t, stepup.IsOutcome(err, stepup.Unavailable), "got %v", err)
		assert.Contains(t, err.Error(), "not signed by a CA in DUO_AUTH_CA_FILE")
	})
}

// selfSignedPEM returns a fresh self-signed CA certificate for 127.0.0.1.
func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "not the fake"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestNewValidates(t *testing.T) {
	ok := stepup.Config{IKey: "DIXXXXXXXXXXXXXXXXXX", SKey: "s3cr3t-value", Host: "api-xxxxxxxx.duosecurity.com"}
	tests := []struct {
		name   string
		change func(c *stepup.Config)
		field  string // the *FieldError's Field; "" for none
	}{
		{"valid", func(*stepup.Config) {}, ""},
		{"host with port", func(c *stepup.Config) { c.Host = "127.0.0.1:8443" }, ""},
		{"no ikey", func(c *stepup.Config) { c.IKey = "" }, "IKey"},
		{"no skey", func(c *stepup.Config) { c.SKey = "" }, "SKey"},
		{"no host", func(c *stepup.Config) { c.Host = "" }, "Host"},
		{"host with scheme", func(c *stepup.Config) { c.Host = "https://api-x.duosecurity.com" }, "Host"},
		{"host with path", func(c *stepup.Config) { c.Host = "api-x.duosecurity.com/auth" }, "Host"},
		{"host with empty port", func(c *stepup.Config) { c.Host = "api-x.duosecurity.com:" }, "Host"},
		{"host with port 0", func(c *stepup.Config) { c.Host = "api-x.duosecurity.com:0" }, "Host"},
		{"host with user", func(c *stepup.Config) { c.Host = "u@api-x.duosecurity.com" }, "Host"},
		{"PEM with a certificate and a private key", func(c *stepup.Config) {
			c.CACertPEM = append(selfSignedPEM(t), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"...)
		}, "CACertPEM"},
		{"negative timeout", func(c *stepup.Config) { c.Timeout = -time.Second }, "Timeout"},
		{"negative cooldown", func(c *stepup.Config) { c.DenyCooldown = -time.Second }, "DenyCooldown"},
		{"negative max pushes", func(c *stepup.Config) { c.MaxPushes = -1 }, "MaxPushes"},
		{"negative grant TTL means no grants", func(c *stepup.Config) { c.GrantTTL = -1 }, ""},
		{"garbage PEM", func(c *stepup.Config) { c.CACertPEM = []byte("not a certificate") }, "CACertPEM"},
		{"PEM without certificates", func(c *stepup.Config) {
			c.CACertPEM = []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
		}, "CACertPEM"},
		{"PEM with a broken certificate", func(c *stepup.Config) {
			c.CACertPEM = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
		}, "CACertPEM"},
		{"garbage PEM ignored with HTTPClient", func(c *stepup.Config) {
			c.CACertPEM = []byte("junk")
			c.HTTPClient = &http.Client{}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.change(&cfg)
			g, err := stepup.New(cfg)
			if tt.field == "" {
				require.NoError(t, err)
				assert.NotNil(t, g)
				return
			}
			require.Error(t, err)
			require.Error(t, cfg.Validate())
			var fe *stepup.FieldError
			require.True(t, errors.As(err, &fe), "got %T, want *FieldError", err)
			assert.Equal(t, tt.field, fe.Field)
			assert.Contains(t, err.Error(), "stepup: Config."+tt.field+": ")
			noSecret(t, err.Error(), ok.SKey, "the error")
		})
	}
}

func TestNewReportsEveryProblem(t *testing.T) {
	err := stepup.Config{Host: "https://x", MaxPushes: -1}.Validate()
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *stepup.FieldError
		require.True(t, errors.As(e, &fe))
		fields = append(fields, fe.Field)
	}
	assert.Equal(t, []string{"IKey", "SKey", "Host", "MaxPushes"}, fields)
}

func TestRequestValidated(t *testing.T) {
	env := newTLS(t, stepup.Config{})
	env.srv.Script("", duotest.Approve)
	req := request("")
	req.Key = ""
	err := env.guard.Approve(t.Context(), req, nil)
	require.True(t, stepup.IsOutcome(err, stepup.Misconfigured), "got %v", err)
	assert.Contains(t, err.Error(), "User, Key")
	assert.Empty(t, env.srv.Requests())
}

func TestManualDecision(t *testing.T) {
	for _, approve := range []bool{true, false} {
		t.Run(map[bool]string{true: "approved", false: "denied"}[approve], func(t *testing.T) {
			env := newTLS(t, stepup.Config{})
			env.srv.Script("alice", duotest.Manual)
			done := make(chan error, 1)
			go func() { done <- env.guard.Approve(t.Context(), request("alice"), nil) }()

			p, err := env.srv.WaitForPush(t.Context())
			require.NoError(t, err)
			// Still waiting: several auth_status polls, no answer yet.
			require.Eventually(t, func() bool { return len(requests(env.srv.Duo, "/auth/v2/auth_status")) >= 3 },
				5*time.Second, 5*time.Millisecond)
			select {
			case err := <-done:
				t.Fatalf("Approve returned before the decision: %v", err)
			default:
			}
			require.NoError(t, env.srv.Decide(p.TxID, approve))
			err = <-done
			if approve {
				assert.NoError(t, err)
			} else {
				assert.True(t, stepup.IsOutcome(err, stepup.Denied), "got %v", err)
			}
		})
	}
}

// TestUnshowableSendsNoPush: a request that cannot be shown whole is
// refused before Duo is asked anything.
func TestUnshowableSendsNoPush(t *testing.T) {
	env := newTLS(t, stepup.Config{})
	env.srv.Script("alice", duotest.Approve)
	req := request("alice")
	req.Details = []stepup.Detail{{Key: "company", New: "Acme" + strings.Repeat("\u2800", 150)}}
	err := env.guard.Approve(t.Context(), req, nil)
	var e *stepup.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, stepup.Unshowable, e.Outcome)
	assert.Equal(t, "company", e.Field)
	assert.Empty(t, env.srv.Requests(), "no preauth, no push")
}

func TestPushInfo(t *testing.T) {
	env := newTLS(t, stepup.Config{ServerName: "crm-mcp", PushType: "AI agent"})
	env.srv.Script("alice", duotest.Approve)
	req := request("alice")
	req.RemoteIP = "192.0.2.7"
	require.NoError(t, env.guard.Approve(t.Context(), req, nil))

	pushes := env.srv.Pushes()
	require.Len(t, pushes, 1)
	p := pushes[0]
	golden(t, "pushinfo.golden", p.RawPushInfo+"\n")
	assert.Equal(t, url.Values{
		"action": {`Search contacts for "defence contractors"`},
		"limit":  {"10"},
		"reason": {`query mentions "defence"`},
		"client": {"agent.example"},
		"server": {"crm-mcp"},
	}, p.PushInfo)
	assert.Equal(t, "alice", p.DisplayUsername)
	assert.Equal(t, "AI agent", p.Type)
	assert.Equal(t, "auto", p.Device)
	assert.True(t, p.Async)

	for _, path := range []string{"/auth/v2/preauth", "/auth/v2/auth"} {
		rs := requests(env.srv.Duo, path)
		require.Len(t, rs, 1, path)
		assert.Equal(t, "192.0.2.7", rs[0].Params.Get("ipaddr"), path)
		assert.Equal(t, "alice", rs[0].Params.Get("username"), path)
	}
}

func TestDefaultsAndUserID(t *testing.T) {
	env := newTLS(t, stepup.Config{UseUserID: true})
	env.srv.Script("DUXXXXXXXXXXXXXXXXXX", duotest.Approve)
	require.NoError(t, env.guard.Approve(t.Context(), request("DUXXXXXXXXXXXXXXXXXX"), nil))

	for _, path := range []string{"/auth/v2/preauth", "/auth/v2/auth"} {
		rs := requests(env.srv.Duo, path)
		require.Len(t, rs, 1, path)
		assert.Equal(t, "DUXXXXXXXXXXXXXXXXXX", rs[0].Params.Get("user_id"), path)
		assert.False(t, rs[0].Params.Has("username"), path)
		assert.False(t, rs[0].Params.Has("ipaddr"), path)
	}
	p := env.srv.Pushes()[0]
	assert.Equal(t, stepup.DefaultPushType, p.Type)
	assert.Equal(t, stepup.DefaultServerName, p.PushInfo.Get("server"))
	assert.Equal(t, "DUXXXXXXXXXXXXXXXXXX", p.DisplayUsername)
}

// A caller whose context is already over never reaches Duo.
func TestApproveWithEndedContext(t *testing.T) {
	env := newTLS(t, stepup.Config{})
	env.srv.Script("alice", duotest.Approve)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := env.guard.Approve(ctx, request("alice"), nil)
	assert.True(t, stepup.IsOutcome(err, stepup.Cancelled), "got %v", err)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, env.srv.Requests())
}

// LockedOut from auth_status (the account locked during the push) cannot
// be scripted directly: duotest's LockedOut already answers preauth. The
// script changes once preauth has answered.
func TestLockedOutDuringPush(t *testing.T) {
	srv := duotest.NewServer()
	t.Cleanup(srv.Close)
	srv.Script("alice", duotest.Approve)
	hc := &http.Client{Transport: &hookTransport{
		base:  tlsTransport(t, srv),
		path:  "/auth/v2/preauth",
		after: func() { srv.Script("alice", duotest.LockedOut) },
	}}
	g, err := stepup.New(stepup.Config{IKey: srv.IKey(), SKey: srv.SKey(), Host: srv.Host(), HTTPClient: hc, PollInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	err = g.Approve(t.Context(), request("alice"), nil)
	require.True(t, stepup.IsOutcome(err, stepup.LockedOut), "got %v", err)
	assert.Contains(t, err.Error(), "unlock")
	assert.Len(t, srv.Pushes(), 1)
}

// A Duo that accepts connections and never completes the TLS handshake:
// Approve ends at its deadline. (net/http finishes the abandoned dial in
// the background, bounded by the transport's handshake timeout.)
func TestHangingHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, conn); conn.Close() }()
		}
	}()
	g, err := stepup.New(stepup.Config{
		IKey: "DIXXXXXXXXXXXXXXXXXX", SKey: "secret", Host: ln.Addr().String(),
		CACertPEM: selfSignedPEM(t), Timeout: 300 * time.Millisecond,
	})
	require.NoError(t, err)
	start := time.Now()
	err = g.Approve(t.Context(), request("alice"), nil)
	assert.Less(t, time.Since(start), time.Second)
	assert.True(t, stepup.IsOutcome(err, stepup.TimedOut), "got %v", err)
}

// A Duo that takes the request and never answers: the request is
// abandoned at the deadline (the server sees its context end), so no
// library call outlives Approve.
func TestHangingAnswer(t *testing.T) {
	abandoned := make(chan struct{}, 10)
	stop := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The server notices a client hanging up only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
			abandoned <- struct{}{}
		case <-stop:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) }) // runs first: no handler blocks Close
	g, err := stepup.New(stepup.Config{
		IKey: "DIXXXXXXXXXXXXXXXXXX", SKey: "secret", Host: srv.Listener.Addr().String(),
		CACertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
		Timeout:   300 * time.Millisecond,
	})
	require.NoError(t, err)

	start := time.Now()
	err = g.Check(t.Context())
	assert.Less(t, time.Since(start), time.Second)
	assert.True(t, stepup.IsOutcome(err, stepup.Unavailable), "got %v", err)
	assert.Contains(t, err.Error(), "did not answer in time")

	start = time.Now()
	err = g.Approve(t.Context(), request("alice"), nil)
	assert.Less(t, time.Since(start), time.Second)
	assert.True(t, stepup.IsOutcome(err, stepup.TimedOut), "got %v", err)
	for range 2 {
		select {
		case <-abandoned:
		case <-time.After(2 * time.Second):
			t.Fatal("a request to the silent server was not abandoned")
		}
	}
}

// TestAuthorizeTellsHowAndWhichPush: for the audit trail, an approval says
// whether a push, a grant or a bypass let the call through and names the
// push; a refusal names the push it refused.
func TestAuthorizeTellsHowAndWhichPush(t *testing.T) {
	env := newTLS(t, stepup.Config{})
	env.srv.Script("alice", duotest.Approve, duotest.Times(1))
	env.srv.Script("alice", duotest.Deny)
	req := request("alice")
	a, err := env.guard.Authorize(t.Context(), req, nil)
	require.NoError(t, err)
	pushes := env.srv.Pushes()
	require.Len(t, pushes, 1)
	assert.Equal(t, stepup.Approval{By: "push", TxID: pushes[0].TxID}, a)

	a, err = env.guard.Authorize(t.Context(), req, nil)
	require.NoError(t, err)
	assert.Equal(t, stepup.Approval{By: "grant"}, a, "the same call again rides the grant")

	other := request("alice")
	other.Key = "another call"
	_, err = env.guard.Authorize(t.Context(), other, nil)
	var e *stepup.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, stepup.Denied, e.Outcome)
	pushes = env.srv.Pushes()
	require.Len(t, pushes, 2)
	assert.Equal(t, pushes[1].TxID, e.TxID)
}
