package duotest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	duoapi "github.com/duosecurity/duo_api_golang"
	"github.com/duosecurity/duo_api_golang/authapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Keys for fakes that are not behind a Server; not secrets.
const (
	testIKey = "DIABCDEFGHIJKLMNOPQR"
	testSKey = "0123456789abcdefghijABCDEFGHIJ0123456789"
)

// tlsPool trusts only s's certificate.
func tlsPool(t *testing.T, s *Server) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(s.CACertPEM()), "CACertPEM does not parse")
	return pool
}

// newAuthAPI returns the real client, over TLS, trusting only s.
func newAuthAPI(t *testing.T, s *Server, ikey, skey string) *authapi.AuthApi {
	t.Helper()
	pool := tlsPool(t, s)
	api := duoapi.NewDuoApi(ikey, skey, s.Host(), "crm-mcp-test",
		duoapi.SetTimeout(10*time.Second),
		duoapi.SetTransport(func(tr *http.Transport) {
			tr.Proxy = nil
			tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		}))
	return authapi.NewAuthApi(*api)
}

// newServer starts a Server closed at the end of the test.
func newServer(t *testing.T) (*Server, *authapi.AuthApi) {
	t.Helper()
	s := NewServer()
	t.Cleanup(s.Close)
	return s, newAuthAPI(t, s, s.IKey(), s.SKey())
}

// signedRequest builds a request signed the way duo_api_golang signs it.
func signedRequest(t *testing.T, method, host, path string, params url.Values, ikey, skey string, date time.Time) *http.Request {
	t.Helper()
	u := url.URL{Scheme: "https", Host: host, Path: path}
	var body io.Reader
	if method == http.MethodGet {
		u.RawQuery = params.Encode()
	} else {
		body = strings.NewReader(params.Encode())
	}
	req, err := http.NewRequest(method, u.String(), body)
	require.NoError(t, err)
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	d := date.UTC().Format(time.RFC1123Z)
	req.Header.Set("Date", d)
	req.Header.Set("Authorization", authorization(ikey, sign(skey, canonicalize(d, method, host, path, params))))
	return req
}

// envelope is Duo's answer.
type envelope struct {
	Stat          string          `json:"stat"`
	Code          int             `json:"code"`
	Message       string          `json:"message"`
	MessageDetail string          `json:"message_detail"`
	Response      json.RawMessage `json:"response"`
}

// send does req and decodes the envelope; a body that is not JSON leaves it
// empty.
func send(t *testing.T, c *http.Client, req *http.Request) (*http.Response, envelope) {
	t.Helper()
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var env envelope
	_ = json.NewDecoder(resp.Body).Decode(&env)
	return resp, env
}

// inProcess returns a fake and a client reaching it without network.
func inProcess(t *testing.T) (*Duo, *http.Client) {
	t.Helper()
	d := New(testIKey, testSKey)
	return d, &http.Client{Transport: d.Transport()}
}

// raw sends a correctly signed request to an in-process fake.
func raw(t *testing.T, d *Duo, c *http.Client, method, path string, params url.Values) (*http.Response, envelope) {
	t.Helper()
	return send(t, c, signedRequest(t, method, "duo.test", path, params, d.IKey(), d.SKey(), time.Now()))
}

func TestSignatureVector(t *testing.T) {
	params := url.Values{"realname": {"First Last"}, "username": {"root"}}
	canon := canonicalize("Tue, 21 Aug 2012 17:29:18 -0000", "post",
		"API-xxxxxxxx.duosecurity.com", "/accounts/v1/account/list", params)
	assert.Equal(t, "Tue, 21 Aug 2012 17:29:18 -0000\nPOST\napi-xxxxxxxx.duosecurity.com\n"+
		"/accounts/v1/account/list\nrealname=First%20Last&username=root", canon)

	sig := sign("Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep", canon)
	assert.Len(t, sig, 128)
	assert.True(t, strings.HasPrefix(sig, "1bffb8924348f7db"), "got %s, want prefix 1bffb8924348f7db", sig)
	assert.True(t, strings.HasSuffix(sig, "5a8122af"), "got %s, want suffix 5a8122af", sig)

	// The verifier accepts the vector when its clock is the vector's date.
	req := httptest.NewRequest(http.MethodPost, "https://api-xxxxxxxx.duosecurity.com/accounts/v1/account/list", nil)
	req.Header.Set("Date", "Tue, 21 Aug 2012 17:29:18 -0000")
	req.Header.Set("Authorization", authorization("DIWJ8X6AEYOR5OMC6TQ1", sig))
	when, _ := parseDate("Tue, 21 Aug 2012 17:29:18 -0000")
	assert.Nil(t, verify(req, params, "DIWJ8X6AEYOR5OMC6TQ1", "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep", when))
}

func TestCanonParams(t *testing.T) {
	tests := []struct {
		name   string
		params url.Values
		want   string
	}{
		{"empty", nil, ""},
		{"space is %20", url.Values{"realname": {"First Last"}}, "realname=First%20Last"},
		{"plus is %2B", url.Values{"a": {"1+1"}}, "a=1%2B1"},
		{"keys and values sorted", url.Values{"username": {"H ell?o"}, "password": {"H-._~i", "A(!'*)"}},
			"password=A%28%21%27%2A%29&password=H-._~i&username=H%20ell%3Fo"},
		{"reserved characters", url.Values{"k": {"a&b=c/d@e"}}, "k=a%26b%3Dc%2Fd%40e"},
		{"UTF-8", url.Values{"k": {"é€"}}, "k=%C3%A9%E2%82%AC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := cloneValues(tt.params)
			assert.Equal(t, tt.want, canonParams(tt.params))
			assert.Equal(t, before, tt.params, "canonParams changed its argument")
		})
	}
}

func TestNewServer(t *testing.T) {
	s, _ := newServer(t)
	assert.Regexp(t, regexp.MustCompile(`^DI[A-Z0-9]{18}$`), s.IKey())
	assert.Regexp(t, regexp.MustCompile(`^[A-Za-z0-9]{40}$`), s.SKey())
	assert.Regexp(t, regexp.MustCompile(`^127\.0\.0\.1:\d+$`), s.Host())
	assert.True(t, strings.HasPrefix(string(s.CACertPEM()), "-----BEGIN CERTIFICATE-----"))

	other := NewServer()
	defer other.Close()
	assert.NotEqual(t, s.IKey(), other.IKey())
	assert.NotEqual(t, s.SKey(), other.SKey())
}

func TestPingAndCheck(t *testing.T) {
	s, api := newServer(t)

	ping, err := api.Ping()
	require.NoError(t, err)
	assert.Equal(t, "OK", ping.Stat)
	assert.InDelta(t, time.Now().Unix(), ping.Response.Time, 5)

	check, err := api.Check()
	require.NoError(t, err)
	assert.Equal(t, "OK", check.Stat)
	assert.InDelta(t, time.Now().Unix(), check.Response.Time, 5)

	reqs := s.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, "/auth/v2/ping", reqs[0].Path)
	assert.False(t, reqs[0].SignatureOK, "ping is unsigned")
	assert.Equal(t, http.StatusOK, reqs[0].Status)
	assert.Equal(t, "/auth/v2/check", reqs[1].Path)
	assert.True(t, reqs[1].SignatureOK)
}

func TestWrongCredentials(t *testing.T) {
	s, _ := newServer(t)
	s.SetDefault(Approve)
	tests := []struct {
		name       string
		ikey, skey string
		wantCode   int32
	}{
		{"wrong skey", s.IKey(), strings.Repeat("x", 40), 40103},
		{"wrong ikey", "DIXXXXXXXXXXXXXXXXXX", s.SKey(), 40102},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newAuthAPI(t, s, tt.ikey, tt.skey)

			check, err := api.Check()
			require.NoError(t, err, "a Duo failure is not a Go error")
			assert.Equal(t, "FAIL", check.Stat)
			require.NotNil(t, check.Code)
			assert.Equal(t, tt.wantCode, *check.Code)

			pre, err := api.Preauth(authapi.PreauthUsername("alice"))
			require.NoError(t, err)
			assert.Equal(t, "FAIL", pre.Stat)
			require.NotNil(t, pre.Code)
			assert.Equal(t, tt.wantCode, *pre.Code)
		})
	}
	assert.Empty(t, s.Pushes())
	for _, r := range s.Requests() {
		assert.False(t, r.SignatureOK)
		assert.Equal(t, http.StatusUnauthorized, r.Status)
	}
}

func TestSignatureChecks(t *testing.T) {
	s, _ := newServer(t)
	c := s.HTTP.Client()
	host := s.Host()
	params := url.Values{"username": {"alice"}}
	now := time.Now()
	// The fake's clock stands still: "299 s old" must not become 300 s
	// while the test runs on a loaded machine (the Date header has whole
	// seconds, so it is at most 299.999 s old).
	s.Now = func() time.Time { return now }

	tests := []struct {
		name       string
		req        func() *http.Request
		wantStatus int
		wantCode   int
	}{
		{"valid", func() *http.Request {
			return signedRequest(t, "POST", host, "/auth/v2/preauth", params, s.IKey(), s.SKey(), now)
		}, 200, 0},
		{"Date 299 s old", func() *http.Request {
			return signedRequest(t, "POST", host, "/auth/v2/preauth", params, s.IKey(), s.SKey(), now.Add(-299*time.Second))
		}, 200, 0},
		{"Date 10 min old", func() *http.Request {
			return signedRequest(t, "POST", host, "/auth/v2/preauth", params, s.IKey(), s.SKey(), now.Add(-10*time.Minute))
		}, 401, 40103},
		{"Date 10 min ahead", func() *http.Request {
			return signedRequest(t, "GET", host, "/auth/v2/check", nil, s.IKey(), s.SKey(), now.Add(10*time.Minute))
		}, 401, 40103},
		{"Date missing", func() *http.Request {
			r := signedRequest(t, "GET", host, "/auth/v2/check", nil, s.IKey(), s.SKey(), now)
			r.Header.Del("Date")
			return r
		}, 401, 40104},
		{"Date unreadable", func() *http.Request {
			r := signedRequest(t, "GET", host, "/auth/v2/check", nil, s.IKey(), s.SKey(), now)
			r.Header.Set("Date", "Di, 21 Aug 2012 17:29:18 -0000")
			return r
		}, 401, 40104},
		{"Date changed after signing", func() *http.Request {
			r := signedRequest(t, "GET", host, "/auth/v2/check", nil, s.IKey(), s.SKey(), now)
			r.Header.Set("Date", now.Add(time.Second).UTC().Format(time.RFC1123Z))
			return r
		}, 401, 40103},
		{"no Authorization", func() *http.Request {
			r := signedRequest(t, "GET", host, "/auth/v2/check", nil, s.IKey(), s.SKey(), now)
			r.Header.Del("Authorization")
			return r
		}, 401, 40101},
		{"not Basic", func() *http.Request {
			r := signedRequest(t, "GET", host, "/auth/v2/check", nil, s.IKey(), s.SKey(), now)
			r.Header.Set("Authorization", "Bearer abc")
			return r
		}, 401, 40101},
		{"params changed after signing", func() *http.Request {
			r := signedRequest(t, "POST", host, "/auth/v2/preauth", params, s.IKey(), s.SKey(), now)
			r.Body = io.NopCloser(strings.NewReader("username=mallory"))
			r.ContentLength = int64(len("username=mallory"))
			return r
		}, 401, 40103},
		{"signed for another host", func() *http.Request {
			r := signedRequest(t, "GET", "api-other.duosecurity.com", "/auth/v2/check", nil, s.IKey(), s.SKey(), now)
			r.URL.Host = host
			r.Host = host
			return r
		}, 401, 40103},
		{"signed for another path", func() *http.Request {
			r := signedRequest(t, "GET", host, "/auth/v2/ping", nil, s.IKey(), s.SKey(), now)
			r.URL.Path = "/auth/v2/check"
			return r
		}, 401, 40103},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, env := send(t, c, tt.req())
			assert.Equal(t, tt.wantStatus, resp.StatusCode)
			if tt.wantCode != 0 {
				assert.Equal(t, "FAIL", env.Stat)
				assert.Equal(t, tt.wantCode, env.Code)
				assert.NotEmpty(t, env.Message)
			} else {
				assert.Equal(t, "OK", env.Stat)
			}
		})
	}
}

func TestHostCaseInsensitive(t *testing.T) {
	d, c := inProcess(t)
	d.SetDefault(Approve)
	req := signedRequest(t, "GET", "DUO.Test", "/auth/v2/check", nil, d.IKey(), d.SKey(), time.Now())
	resp, env := send(t, c, req)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "OK", env.Stat)
}

func TestNowDrivesDateCheck(t *testing.T) {
	d, c := inProcess(t)
	then := time.Date(2012, 8, 21, 17, 29, 18, 0, time.UTC)
	d.Now = func() time.Time { return then }

	resp, env := send(t, c, signedRequest(t, "GET", "duo.test", "/auth/v2/check", nil, d.IKey(), d.SKey(), then))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var got struct{ Time int64 }
	require.NoError(t, json.Unmarshal(env.Response, &got))
	assert.Equal(t, then.Unix(), got.Time)

	resp, env = send(t, c, signedRequest(t, "GET", "duo.test", "/auth/v2/check", nil, d.IKey(), d.SKey(), time.Now()))
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Equal(t, 40103, env.Code)
}

func TestPreauth(t *testing.T) {
	s, api := newServer(t)
	tests := []struct {
		outcome    Outcome
		wantResult string
	}{
		{Approve, "auth"},
		{Deny, "auth"},
		{Fraud, "auth"},
		{Timeout, "auth"},
		{Manual, "auth"},
		{PreauthAllow, "allow"},
		{PreauthDeny, "deny"},
		{LockedOut, "deny"},
		{Enroll, "enroll"},
	}
	for _, tt := range tests {
		t.Run(tt.outcome.String(), func(t *testing.T) {
			user := "user-" + tt.outcome.String()
			s.Script(user, tt.outcome)
			res, err := api.Preauth(authapi.PreauthUsername(user), authapi.PreauthIpAddr("192.0.2.1"))
			require.NoError(t, err)
			require.Equal(t, "OK", res.Stat)
			assert.Equal(t, tt.wantResult, res.Response.Result)
			assert.NotEmpty(t, res.Response.Status_Msg)
			switch tt.wantResult {
			case "auth":
				require.Len(t, res.Response.Devices, 1)
				dev := res.Response.Devices[0]
				assert.Equal(t, deviceID, dev.Device)
				assert.Equal(t, "phone", dev.Type)
				assert.Equal(t, "Test phone", dev.Name)
				assert.Equal(t, "XXX-XXX-0100", dev.Number)
				assert.Equal(t, []string{"auto", "push", "sms", "phone", "mobile_otp"}, dev.Capabilities)
			case "enroll":
				assert.True(t, strings.HasPrefix(res.Response.Enroll_Portal_Url, "https://"+s.Host()+"/"),
					"got %q", res.Response.Enroll_Portal_Url)
			default:
				assert.Empty(t, res.Response.Devices)
			}
		})
	}
	assert.Empty(t, s.Pushes(), "preauth sends no push")
}

func TestPreauthByUserID(t *testing.T) {
	s, api := newServer(t)
	s.Script("DUABCDEFGHIJKLMNOPQR", PreauthAllow)
	res, err := api.Preauth(authapi.PreauthUserId("DUABCDEFGHIJKLMNOPQR"))
	require.NoError(t, err)
	assert.Equal(t, "allow", res.Response.Result)

	res2, err := api.Auth("push", authapi.AuthUserId("DUABCDEFGHIJKLMNOPQR"), authapi.AuthDevice("auto"))
	require.NoError(t, err)
	assert.Equal(t, "allow", res2.Response.Result)
	assert.Equal(t, "bypass", res2.Response.Status)
	assert.Equal(t, "DUABCDEFGHIJKLMNOPQR", s.Pushes()[0].User)
}

func TestAuthOutcomes(t *testing.T) {
	s, api := newServer(t)
	tests := []struct {
		outcome                Outcome
		wantResult, wantStatus string
	}{
		{Approve, "allow", "allow"},
		{Deny, "deny", "deny"},
		{Fraud, "deny", "fraud"},
		{Timeout, "deny", "timeout"},
		{LockedOut, "deny", "locked_out"},
		{PreauthAllow, "allow", "bypass"},
		{PreauthDeny, "deny", "deny"},
		{Enroll, "deny", "deny"},
	}
	for _, tt := range tests {
		t.Run(tt.outcome.String(), func(t *testing.T) {
			user := "user-" + tt.outcome.String()
			s.Script(user, tt.outcome)

			sync, err := api.Auth("push", authapi.AuthUsername(user), authapi.AuthDevice(deviceID))
			require.NoError(t, err)
			require.Equal(t, "OK", sync.Stat)
			assert.Equal(t, tt.wantResult, sync.Response.Result)
			assert.Equal(t, tt.wantStatus, sync.Response.Status)
			assert.NotEmpty(t, sync.Response.Status_Msg)
			assert.Empty(t, sync.Response.Txid)

			async, err := api.Auth("push", authapi.AuthUsername(user), authapi.AuthDevice("auto"), authapi.AuthAsync())
			require.NoError(t, err)
			require.Equal(t, "OK", async.Stat)
			require.NotEmpty(t, async.Response.Txid)
			assert.Empty(t, async.Response.Result)

			st, err := api.AuthStatus(async.Response.Txid)
			require.NoError(t, err)
			require.Equal(t, "OK", st.Stat)
			assert.Equal(t, tt.wantResult, st.Response.Result)
			assert.Equal(t, tt.wantStatus, st.Response.Status)

			var mine []Push
			for _, p := range s.Pushes() {
				if p.User == user {
					mine = append(mine, p)
				}
			}
			require.Len(t, mine, 2)
			assert.False(t, mine[0].Async)
			assert.True(t, mine[1].Async)
			assert.Equal(t, async.Response.Txid, mine[1].TxID)
			for _, p := range mine {
				assert.Equal(t, tt.wantResult, p.Result)
				assert.Equal(t, tt.wantStatus, p.Status)
			}
		})
	}
}

func TestDefaultOutcome(t *testing.T) {
	s, api := newServer(t)
	res, err := api.Auth("push", authapi.AuthUsername("stranger"), authapi.AuthDevice("auto"))
	require.NoError(t, err)
	assert.Equal(t, "deny", res.Response.Result, "the default fails closed")

	s.SetDefault(Approve)
	res, err = api.Auth("push", authapi.AuthUsername("stranger"), authapi.AuthDevice("auto"))
	require.NoError(t, err)
	assert.Equal(t, "allow", res.Response.Result)
}

func TestBadParams(t *testing.T) {
	d, c := inProcess(t)
	d.SetDefault(Approve)
	push := func(extra url.Values) url.Values {
		v := url.Values{"username": {"alice"}, "factor": {"push"}, "device": {"auto"}}
		for k, vs := range extra {
			v[k] = vs
		}
		return v
	}
	tests := []struct {
		name       string
		method     string
		path       string
		params     url.Values
		wantCode   int
		wantDetail string
	}{
		{"preauth without user", "POST", "/auth/v2/preauth", url.Values{"ipaddr": {"192.0.2.1"}}, 40001, "username or user_id"},
		{"preauth with both users", "POST", "/auth/v2/preauth", url.Values{"username": {"a"}, "user_id": {"b"}}, 40002, "username and user_id both given"},
		{"auth without user", "POST", "/auth/v2/auth", url.Values{"factor": {"push"}, "device": {"auto"}}, 40001, "username or user_id"},
		{"auth without factor", "POST", "/auth/v2/auth", url.Values{"username": {"alice"}, "device": {"auto"}}, 40001, "factor"},
		{"auth with factor sms", "POST", "/auth/v2/auth", push(url.Values{"factor": {"sms"}}), 40002, "factor"},
		{"auth with factor auto", "POST", "/auth/v2/auth", push(url.Values{"factor": {"auto"}}), 40002, "factor"},
		{"auth without device", "POST", "/auth/v2/auth", url.Values{"username": {"alice"}, "factor": {"push"}}, 40001, "device"},
		{"auth with unknown device", "POST", "/auth/v2/auth", push(url.Values{"device": {"DPXXXXXXXXXXXXXXXXXX"}}), 40002, "device"},
		{"pushinfo too long", "POST", "/auth/v2/auth", push(url.Values{"pushinfo": {strings.Repeat("a", 20001)}}), 40002, "pushinfo"},
		{"pushinfo malformed", "POST", "/auth/v2/auth", push(url.Values{"pushinfo": {"a=%zz"}}), 40002, "pushinfo"},
		{"auth_status without txid", "GET", "/auth/v2/auth_status", nil, 40001, "txid"},
		{"auth_status unknown txid", "GET", "/auth/v2/auth_status", url.Values{"txid": {"nope"}}, 40002, "txid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, env := raw(t, d, c, tt.method, tt.path, tt.params)
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
			assert.Equal(t, "FAIL", env.Stat)
			assert.Equal(t, tt.wantCode, env.Code)
			assert.Equal(t, tt.wantDetail, env.MessageDetail)
		})
	}
	assert.Empty(t, d.Pushes(), "a rejected auth is not a push")

	resp, env := raw(t, d, c, "POST", "/auth/v2/auth", push(url.Values{"pushinfo": {strings.Repeat("a", 20000)}}))
	assert.Equal(t, http.StatusOK, resp.StatusCode, "20,000 bytes of pushinfo is allowed")
	assert.Equal(t, "OK", env.Stat)
}

func TestUnknownPathAndMethod(t *testing.T) {
	d, c := inProcess(t)
	resp, env := raw(t, d, c, "GET", "/auth/v2/logo", nil)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	assert.Equal(t, 40401, env.Code)

	resp, env = raw(t, d, c, "GET", "/auth/v2/preauth", url.Values{"username": {"alice"}})
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	assert.Equal(t, 40501, env.Code)
}

func TestPushInfo(t *testing.T) {
	s, api := newServer(t)
	s.Script("alice", Approve)
	info := url.Values{
		"tool":   {"crm.deals.write"},
		"record": {"Acme & Sons = big deal"},
		"note":   {"50% off, +tax; é"},
	}
	res, err := api.Auth("push",
		authapi.AuthUsername("alice"),
		authapi.AuthDevice("auto"),
		authapi.AuthType("CRM change"),
		authapi.AuthDisplayUsername("Alice A."),
		authapi.AuthPushinfo(info.Encode()))
	require.NoError(t, err)
	require.Equal(t, "OK", res.Stat)

	pushes := s.Pushes()
	require.Len(t, pushes, 1)
	p := pushes[0]
	assert.Equal(t, info, p.PushInfo)
	assert.Equal(t, info.Encode(), p.RawPushInfo)
	assert.Equal(t, "CRM change", p.Type)
	assert.Equal(t, "Alice A.", p.DisplayUsername)
	assert.Equal(t, "auto", p.Device)

	// Pushes returns copies.
	p.PushInfo.Set("tool", "changed")
	assert.Equal(t, "crm.deals.write", s.Pushes()[0].PushInfo.Get("tool"))
}

func TestScriptedErrors(t *testing.T) {
	s, api := newServer(t)

	t.Run("Unauthorized401", func(t *testing.T) {
		s.Script("u401", Unauthorized401)
		res, err := api.Preauth(authapi.PreauthUsername("u401"))
		require.NoError(t, err)
		assert.Equal(t, "FAIL", res.Stat)
		require.NotNil(t, res.Code)
		assert.Equal(t, int32(40103), *res.Code)

		auth, err := api.Auth("push", authapi.AuthUsername("u401"), authapi.AuthDevice("auto"))
		require.NoError(t, err)
		assert.Equal(t, "FAIL", auth.Stat)
	})

	t.Run("ServerError500", func(t *testing.T) {
		s.Script("u500", ServerError500)
		_, err := api.Preauth(authapi.PreauthUsername("u500"))
		assert.Error(t, err, "the body is not JSON")

		resp, _ := send(t, s.HTTP.Client(), signedRequest(t, "POST", s.Host(), "/auth/v2/auth",
			url.Values{"username": {"u500"}, "factor": {"push"}, "device": {"auto"}}, s.IKey(), s.SKey(), time.Now()))
		assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	})
	assert.Empty(t, s.Pushes())
}

func TestRateLimited429(t *testing.T) {
	s, _ := newServer(t)
	s.Script("busy", RateLimited429, RetryAfter(7), Times(1))
	s.Script("busy", Approve)
	preauth := func() *http.Request {
		return signedRequest(t, "POST", s.Host(), "/auth/v2/preauth", url.Values{"username": {"busy"}}, s.IKey(), s.SKey(), time.Now())
	}

	resp, env := send(t, s.HTTP.Client(), preauth())
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "7", resp.Header.Get("Retry-After"))
	assert.Equal(t, "FAIL", env.Stat)
	assert.Equal(t, 42901, env.Code)

	resp, env = send(t, s.HTTP.Client(), preauth())
	assert.Equal(t, http.StatusOK, resp.StatusCode, "Times(1) is used up")
	assert.Equal(t, "OK", env.Stat)
}

// errOn429 turns a 429 into an error so duo_api_golang returns at once
// instead of sleeping and retrying for a minute.
type errOn429 struct{ base http.RoundTripper }

var errRateLimited = errors.New("rate limited")

func (rt errOn429) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		resp.Body.Close()
		return nil, fmt.Errorf("%w, Retry-After %q", errRateLimited, resp.Header.Get("Retry-After"))
	}
	return resp, err
}

func TestRateLimited429ThroughLibrary(t *testing.T) {
	s, api := newServer(t)
	s.Script("busy", RateLimited429)
	api.SetCustomHTTPClient(&http.Client{
		Timeout:   10 * time.Second,
		Transport: errOn429{&http.Transport{TLSClientConfig: &tls.Config{RootCAs: tlsPool(t, s)}}},
	})

	start := time.Now()
	_, err := api.Preauth(authapi.PreauthUsername("busy"))
	require.ErrorIs(t, err, errRateLimited)
	assert.Contains(t, err.Error(), `"1"`, "the default Retry-After")
	assert.Less(t, time.Since(start), time.Second, "the library must not have slept")
	assert.Len(t, s.Requests(), 1, "no retry")
}

func TestRetryAfterZeroOmitsHeader(t *testing.T) {
	d, c := inProcess(t)
	d.Script("busy", RateLimited429, RetryAfter(0))
	resp, env := raw(t, d, c, "POST", "/auth/v2/preauth", url.Values{"username": {"busy"}})
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Empty(t, resp.Header.Values("Retry-After"))
	assert.Equal(t, 42901, env.Code)
}

func TestScriptQueue(t *testing.T) {
	d, c := inProcess(t)
	preauth := func(user string) int {
		resp, _ := raw(t, d, c, "POST", "/auth/v2/preauth", url.Values{"username": {user}})
		return resp.StatusCode
	}
	auth := func(user string) (int, string) {
		resp, env := raw(t, d, c, "POST", "/auth/v2/auth", url.Values{"username": {user}, "factor": {"push"}, "device": {"auto"}})
		var st state
		_ = json.Unmarshal(env.Response, &st)
		return resp.StatusCode, st.Status
	}

	t.Run("Times then standing", func(t *testing.T) {
		d.Script("bob", RateLimited429, Times(2))
		d.Script("bob", Approve)
		assert.Equal(t, 429, preauth("bob"))
		code, _ := auth("bob")
		assert.Equal(t, 429, code)
		assert.Equal(t, 200, preauth("bob"))
		_, status := auth("bob")
		assert.Equal(t, "allow", status)
		_, status = auth("bob")
		assert.Equal(t, "allow", status)
	})

	t.Run("standing then Times", func(t *testing.T) {
		d.Script("carol", Approve)
		d.Script("carol", Deny, Times(1))
		assert.Equal(t, 200, preauth("carol"), "preauth does not use up a push outcome")
		_, status := auth("carol")
		assert.Equal(t, "deny", status)
		_, status = auth("carol")
		assert.Equal(t, "allow", status)
	})

	t.Run("standing replaced", func(t *testing.T) {
		d.Script("dave", Approve)
		d.Script("dave", Fraud)
		_, status := auth("dave")
		assert.Equal(t, "fraud", status)
	})

	t.Run("Times runs out to the default", func(t *testing.T) {
		d.Script("erin", Approve, Times(1))
		_, status := auth("erin")
		assert.Equal(t, "allow", status)
		_, status = auth("erin")
		assert.Equal(t, "deny", status)
	})

	t.Run("error outcome answers auth_status", func(t *testing.T) {
		d.Script("frank", Manual)
		resp, env := raw(t, d, c, "POST", "/auth/v2/auth", url.Values{"username": {"frank"}, "factor": {"push"}, "device": {"auto"}, "async": {"1"}})
		require.Equal(t, 200, resp.StatusCode)
		var res struct{ Txid string }
		require.NoError(t, json.Unmarshal(env.Response, &res))

		d.Script("frank", ServerError500, Times(1))
		resp, _ = raw(t, d, c, "GET", "/auth/v2/auth_status", url.Values{"txid": {res.Txid}})
		assert.Equal(t, 500, resp.StatusCode)
		resp, env = raw(t, d, c, "GET", "/auth/v2/auth_status", url.Values{"txid": {res.Txid}})
		assert.Equal(t, 200, resp.StatusCode)
		assert.Contains(t, string(env.Response), `"waiting"`)
	})
}

func TestScriptPanicsOnMisuse(t *testing.T) {
	d := New(testIKey, testSKey)
	assert.Panics(t, func() { d.Script("a", Approve, RetryAfter(3)) })
	assert.Panics(t, func() { d.Script("a", Manual, AfterDelay(time.Second)) })
	assert.Panics(t, func() { d.Script("a", LockedOut, AfterDelay(time.Second)) })
	assert.Panics(t, func() { d.Script("a", Approve, Times(0)) })
	assert.Panics(t, func() { d.Script("a", Outcome(99)) })
	assert.Panics(t, func() { d.SetDefault(Approve, Times(2)) })
	assert.Panics(t, func() { New("", testSKey) })
}

func TestManualAsync(t *testing.T) {
	s, api := newServer(t)
	s.Script("manny", Manual)
	s.Script("alice", Approve)

	res, err := api.Auth("push", authapi.AuthUsername("manny"), authapi.AuthDevice("auto"), authapi.AuthAsync())
	require.NoError(t, err)
	txid := res.Response.Txid
	require.NotEmpty(t, txid)

	// WaitForPush returns the push even though it came first.
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	p, err := s.WaitForPush(ctx)
	require.NoError(t, err)
	assert.Equal(t, txid, p.TxID)

	st, err := api.AuthStatus(txid)
	require.NoError(t, err)
	assert.Equal(t, "waiting", st.Response.Result)
	assert.Equal(t, "pushed", st.Response.Status)

	pending := s.Pending()
	require.Len(t, pending, 1)
	assert.Equal(t, txid, pending[0].TxID)

	require.NoError(t, s.Decide(txid, true))
	assert.Equal(t, "allow", s.Pushes()[0].Result)

	st, err = api.AuthStatus(txid)
	require.NoError(t, err)
	assert.Equal(t, "allow", st.Response.Result)
	assert.Equal(t, "allow", st.Response.Status)
	assert.Empty(t, s.Pending())

	assert.ErrorIs(t, s.Decide(txid, false), ErrNotPending, "already decided")
	assert.ErrorIs(t, s.Decide("no-such-txid", true), ErrNotFound)

	other, err := api.Auth("push", authapi.AuthUsername("alice"), authapi.AuthDevice("auto"), authapi.AuthAsync())
	require.NoError(t, err)
	assert.ErrorIs(t, s.Decide(other.Response.Txid, false), ErrNotPending, "not a Manual push")
}

func TestManualSync(t *testing.T) {
	s, api := newServer(t)
	s.Script("manny", Manual)

	type result struct {
		res *authapi.AuthResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := api.Auth("push", authapi.AuthUsername("manny"), authapi.AuthDevice("auto"))
		done <- result{res, err}
	}()

	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	p, err := s.WaitForPush(ctx)
	require.NoError(t, err)
	assert.False(t, p.Async)
	assert.Equal(t, "waiting", p.Result)

	select {
	case r := <-done:
		t.Fatalf("synchronous auth answered before Decide: %+v, %v", r.res, r.err)
	case <-time.After(50 * time.Millisecond):
	}

	require.NoError(t, s.Decide(p.TxID, false))
	r := <-done
	require.NoError(t, r.err)
	assert.Equal(t, "deny", r.res.Response.Result)
	assert.Equal(t, "deny", r.res.Response.Status)
}

func TestWaitForPushHonorsContext(t *testing.T) {
	d := New(testIKey, testSKey)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := d.WaitForPush(ctx)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestSyncAuthHonorsRequestContext(t *testing.T) {
	d := New(testIKey, testSKey)
	d.Script("manny", Manual)
	ctx, cancel := context.WithCancel(context.Background())
	req := signedRequest(t, "POST", "duo.test", "/auth/v2/auth",
		url.Values{"username": {"manny"}, "factor": {"push"}, "device": {"auto"}}, d.IKey(), d.SKey(), time.Now())
	req = req.WithContext(ctx)

	go func() {
		_, _ = d.WaitForPush(context.Background())
		cancel()
	}()
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, req) // returns once the request's context ends
	assert.Empty(t, rec.Body.String())
	assert.Len(t, d.Pending(), 1, "the push is still waiting for someone")
	assert.Equal(t, 0, d.Requests()[0].Status, "no answer was written")
}

func TestCloseReleasesBlockedAuth(t *testing.T) {
	s := NewServer()
	api := newAuthAPI(t, s, s.IKey(), s.SKey())
	s.Script("manny", Manual)
	done := make(chan *authapi.AuthResult, 1)
	go func() {
		res, _ := api.Auth("push", authapi.AuthUsername("manny"), authapi.AuthDevice("auto"))
		done <- res
	}()
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_, err := s.WaitForPush(ctx)
	require.NoError(t, err)

	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a waiting synchronous auth")
	}
	if res := <-done; res != nil {
		assert.Equal(t, "FAIL", res.Stat)
	}
}

func TestAfterDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := New(testIKey, testSKey)
		api := duoapi.NewDuoApi(d.IKey(), d.SKey(), "duo.test", "crm-mcp-test")
		api.SetCustomHTTPClient(&http.Client{Transport: d.Transport()})
		auth := authapi.NewAuthApi(*api)
		d.Script("slow", Approve, AfterDelay(5*time.Second))
		d.Script("slowfraud", Fraud, AfterDelay(3*time.Second))

		res, err := auth.Auth("push", authapi.AuthUsername("slow"), authapi.AuthDevice("auto"), authapi.AuthAsync())
		require.NoError(t, err)
		require.Equal(t, "OK", res.Stat)
		txid := res.Response.Txid

		time.Sleep(4999 * time.Millisecond)
		st, err := auth.AuthStatus(txid)
		require.NoError(t, err)
		assert.Equal(t, "waiting", st.Response.Result)
		assert.Equal(t, "pushed", st.Response.Status)
		assert.Empty(t, d.Pending(), "AfterDelay pushes are not Manual")

		time.Sleep(time.Millisecond)
		st, err = auth.AuthStatus(txid)
		require.NoError(t, err)
		assert.Equal(t, "allow", st.Response.Result)

		start := time.Now()
		sync, err := auth.Auth("push", authapi.AuthUsername("slowfraud"), authapi.AuthDevice("auto"))
		require.NoError(t, err)
		assert.Equal(t, "fraud", sync.Response.Status)
		assert.Equal(t, 3*time.Second, time.Since(start), "sync auth blocks exactly until the delay passes")
	})
}

func TestPushTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := New(testIKey, testSKey)
		d.PushTimeout = 60 * time.Second
		api := duoapi.NewDuoApi(d.IKey(), d.SKey(), "duo.test", "crm-mcp-test")
		api.SetCustomHTTPClient(&http.Client{Transport: d.Transport()})
		auth := authapi.NewAuthApi(*api)
		d.Script("idle", Manual)
		d.Script("late", Approve, AfterDelay(90*time.Second))

		res, err := auth.Auth("push", authapi.AuthUsername("idle"), authapi.AuthDevice("auto"), authapi.AuthAsync())
		require.NoError(t, err)
		txid := res.Response.Txid

		time.Sleep(59 * time.Second)
		st, err := auth.AuthStatus(txid)
		require.NoError(t, err)
		assert.Equal(t, "waiting", st.Response.Result)
		require.Len(t, d.Pending(), 1)

		time.Sleep(time.Second)
		st, err = auth.AuthStatus(txid)
		require.NoError(t, err)
		assert.Equal(t, "deny", st.Response.Result)
		assert.Equal(t, "timeout", st.Response.Status)
		assert.Empty(t, d.Pending())
		assert.ErrorIs(t, d.Decide(txid, true), ErrNotPending, "too late")

		start := time.Now()
		sync, err := auth.Auth("push", authapi.AuthUsername("late"), authapi.AuthDevice("auto"))
		require.NoError(t, err)
		assert.Equal(t, "timeout", sync.Response.Status, "the push timed out before the delay passed")
		assert.Equal(t, 60*time.Second, time.Since(start))
	})
}

func TestRequestsHoldNoSecrets(t *testing.T) {
	s, api := newServer(t)
	s.SetDefault(Approve)
	_, err := api.Check()
	require.NoError(t, err)
	_, err = api.Auth("push", authapi.AuthUsername("alice"), authapi.AuthDevice("auto"))
	require.NoError(t, err)

	dump := fmt.Sprintf("%#v %#v", s.Requests(), s.Pushes())
	assert.NotContains(t, dump, s.SKey())
	assert.NotContains(t, dump, "Basic ")
	assert.NotContains(t, strings.ToLower(dump), "authorization")

	reqs := s.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, url.Values{"username": {"alice"}, "factor": {"push"}, "device": {"auto"}}, reqs[1].Params)
}

func TestConcurrentUse(t *testing.T) {
	s, api := newServer(t)
	s.SetDefault(Approve)

	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("user%d", i)
			res, err := api.Auth("push", authapi.AuthUsername(user), authapi.AuthDevice("auto"), authapi.AuthAsync())
			if assert.NoError(t, err) && assert.Equal(t, "OK", res.Stat) {
				st, err := api.AuthStatus(res.Response.Txid)
				if assert.NoError(t, err) {
					assert.Equal(t, "allow", st.Response.Result)
				}
			}
			_ = s.Requests()
			_ = s.Pushes()
		}()
	}
	wg.Wait()
	assert.Len(t, s.Pushes(), n)
}
