// Package duotest is a fake of the Duo Auth API v2 for tests, in the manner
// of net/http/httptest: it verifies signatures and answers by script.
// crm-mcp dev serves it too, behind the push page of internal/devduo that
// plays Duo Mobile; that page is not part of the fake.
//
// The fake verifies real request signatures (the v2 canonical form,
// HMAC-SHA512), so a client built on github.com/duosecurity/duo_api_golang is
// exercised end to end, over TLS when served by a Server:
//
//	srv := duotest.NewServer()
//	defer srv.Close()
//	srv.Script("alice", duotest.Approve)
//
//	pool := x509.NewCertPool()
//	pool.AppendCertsFromPEM(srv.CACertPEM())
//	api := duoapi.NewDuoApi(srv.IKey(), srv.SKey(), srv.Host(), "my-app",
//		duoapi.SetTransport(func(t *http.Transport) {
//			t.TLSClientConfig = &tls.Config{RootCAs: pool}
//		}))
//	res, err := authapi.NewAuthApi(*api).Auth("push",
//		authapi.AuthUsername("alice"), authapi.AuthDevice("auto"))
//	// res.Response.Result == "allow"
//
// # Endpoints
//
// GET /auth/v2/ping (unsigned) and GET /auth/v2/check answer the time.
// POST /auth/v2/preauth and POST /auth/v2/auth take username or user_id;
// auth takes factor=push only, a device ("auto" or the one device preauth
// lists), and optional async, type, display_username and pushinfo (at most
// 20,000 bytes, itself URL-encoded; the fake decodes it). GET
// /auth/v2/auth_status takes txid and answers at once: there is no long
// polling, so clients poll at their own pace.
//
// # Errors
//
// Answers use Duo's envelope. Credentials: 401 with 40101 (no Authorization),
// 40102 (unknown integration key), 40104 (Date missing or unreadable), 40103
// (bad signature, or Date more than 300 s from the fake's clock). Parameters:
// 400 with 40001 (missing; message_detail names it) or 40002 (invalid;
// message_detail names it, and an unknown txid is one). Unknown path: 404
// with 40401; wrong method: 405 with 40501. Scripted errors: see Outcome.
// Note that duo_api_golang meets a 429 by sleeping and retrying for about a
// minute: a test of RateLimited429 should send its own signed request, or
// give the client a transport that turns a 429 into an error.
//
// # Outcomes
//
// Script decides per user what preauth and auth answer; users without a
// script get the default, Deny (fail closed), which SetDefault changes. An
// auth call that passes its checks is recorded as a Push whatever the outcome;
// the Push's Result and Status are worked out from the clock each time they
// are read, never by a background goroutine.
//
// # Time
//
// The fake's clock is the Now field. It has no goroutines and no tickers;
// only a synchronous auth that must wait sleeps, on a time.Timer, for the
// next state change or a decision. So it works inside a testing/synctest
// bubble when created in it and reached through Transport, which needs no
// network (a bubble's clock does not advance while a goroutine waits on a
// socket).
//
// # Interactive use
//
// With Manual, a push stays waiting until Decide approves or denies it (or
// PushTimeout passes). Pending lists such pushes, and WaitForPush hands a
// test each new push in turn.
package duotest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// deviceID is the one device preauth lists for a user with a push outcome;
// auth accepts it or "auto".
const deviceID = "DPFZRS9FB0D46QFTM899"

const (
	deviceName   = "Test phone"
	deviceNumber = "XXX-XXX-0100"
)

// maxPushInfo is Duo's documented limit on the pushinfo parameter.
const maxPushInfo = 20000

// maxBody bounds a request body; a pushinfo at its limit, escaped twice,
// fits many times over.
const maxBody = 1 << 20

// Errors returned by Decide, so that a page answering pushes for a person
// (internal/devduo) can tell an unknown push from one already answered.
var (
	ErrNotFound   = errors.New("duotest: no such transaction")
	ErrNotPending = errors.New("duotest: transaction is not a pending Manual push")
)

// Duo is the fake Duo Auth API. It is an http.Handler and safe for
// concurrent use. Create it with New; set its fields before it serves.
type Duo struct {
	// Now returns the fake's current time, used for the Date check, for
	// AfterDelay and PushTimeout, and for recorded times. Nil means
	// time.Now.
	Now func() time.Time

	// PushTimeout, when positive, ends a push still waiting after that long
	// with deny/timeout, as real Duo does after about 60 s. Zero means a
	// push waits until decided, which suits a person deciding on a web page.
	PushTimeout time.Duration

	ikey, skey string

	stopOnce sync.Once
	stop     chan struct{} // closed by Server.Close to release blocked calls

	mu       sync.Mutex
	def      entry
	users    map[string]*userScript
	txs      []*tx
	byID     map[string]*tx
	reqs     []Request
	pushed   chan struct{} // closed and replaced when a push is recorded
	waitNext int           // index of the push WaitForPush returns next
}

// New returns a fake that accepts the integration key ikey and the secret
// key skey. It panics if either is empty.
func New(ikey, skey string) *Duo {
	if ikey == "" || skey == "" {
		panic("duotest: New needs an integration key and a secret key")
	}
	return &Duo{
		ikey:   ikey,
		skey:   skey,
		stop:   make(chan struct{}),
		def:    entry{outcome: Deny, retryAfter: -1},
		users:  make(map[string]*userScript),
		byID:   make(map[string]*tx),
		pushed: make(chan struct{}),
	}
}

// IKey returns the integration key the fake accepts.
func (d *Duo) IKey() string { return d.ikey }

// SKey returns the secret key the fake accepts.
func (d *Duo) SKey() string { return d.skey }

func (d *Duo) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// Push is one /auth/v2/auth transaction as the fake saw it, with its state
// when the Push was read.
type Push struct {
	TxID            string
	User            string // the username or user_id value
	Device          string // as sent: "auto" or a device ID
	Type            string
	DisplayUsername string
	PushInfo        url.Values // RawPushInfo decoded
	RawPushInfo     string
	Async           bool
	Created         time.Time
	Result          string // "waiting", "allow" or "deny"
	Status          string // "pushed", "allow", "bypass", "deny", "fraud", "timeout", "locked_out"
}

// Request is one request as the fake saw it. It holds no credentials.
type Request struct {
	Method      string
	Path        string
	Params      url.Values // query for GET, form body for POST
	SignatureOK bool       // a valid signature was checked; false for ping
	Status      int        // HTTP status answered; 0 while being served, or if the client left first
}

// tx is a recorded auth transaction.
type tx struct {
	push    Push // static fields; Result, Status and StatusMsg unset
	outcome Outcome
	ready   time.Time     // when a non-Manual outcome takes effect
	expires time.Time     // zero: never
	done    chan struct{} // Manual only: closed by Decide
	decided bool
	approve bool
}

// state is a transaction's answer at one moment.
type state struct {
	Result    string `json:"result"`
	Status    string `json:"status"`
	StatusMsg string `json:"status_msg"`
}

var (
	stateWaiting = state{"waiting", "pushed", "Pushed a login request to your device..."}
	stateAllow   = state{"allow", "allow", "Success. Logging you in..."}
	stateDeny    = state{"deny", "deny", "Login request denied."}
	stateFraud   = state{"deny", "fraud", "Login request reported as fraudulent."}
	stateTimeout = state{"deny", "timeout", "Login timed out."}
	stateLocked  = state{"deny", "locked_out", "Your account is locked out."}
	stateBypass  = state{"allow", "bypass", "Allowing unknown user: bypass status."}
	statePolicy  = state{"deny", "deny", "Login denied by policy."}
	stateEnroll  = state{"deny", "deny", "User is not enrolled."}
)

var finalStates = map[Outcome]state{
	Approve:      stateAllow,
	Deny:         stateDeny,
	Fraud:        stateFraud,
	Timeout:      stateTimeout,
	LockedOut:    stateLocked,
	PreauthAllow: stateBypass,
	PreauthDeny:  statePolicy,
	Enroll:       stateEnroll,
}

func (t *tx) state(now time.Time) state {
	if t.outcome == Manual {
		if t.decided {
			if t.approve {
				return stateAllow
			}
			return stateDeny
		}
	} else if !now.Before(t.ready) {
		return finalStates[t.outcome]
	}
	if !t.expires.IsZero() && !now.Before(t.expires) {
		return stateTimeout
	}
	return stateWaiting
}

// untilChange returns how long until the state may change by itself, or 0
// if only Decide can change it.
func (t *tx) untilChange(now time.Time) time.Duration {
	var wait time.Duration
	if t.outcome != Manual && now.Before(t.ready) {
		wait = t.ready.Sub(now)
	}
	if !t.expires.IsZero() && now.Before(t.expires) {
		if w := t.expires.Sub(now); wait == 0 || w < wait {
			wait = w
		}
	}
	return wait
}

func (t *tx) snapshot(now time.Time) Push {
	p := t.push
	p.PushInfo = cloneValues(p.PushInfo)
	st := t.state(now)
	p.Result, p.Status = st.Result, st.Status
	return p
}

// Pushes returns every recorded auth transaction, oldest first.
func (d *Duo) Pushes() []Push {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	out := make([]Push, len(d.txs))
	for i, t := range d.txs {
		out[i] = t.snapshot(now)
	}
	return out
}

// Pending returns the Manual pushes still waiting for Decide, oldest first.
func (d *Duo) Pending() []Push {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	var out []Push
	for _, t := range d.txs {
		if t.outcome == Manual && t.state(now) == stateWaiting {
			out = append(out, t.snapshot(now))
		}
	}
	return out
}

// Requests returns every request served, in arrival order.
func (d *Duo) Requests() []Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := slices.Clone(d.reqs)
	for i := range out {
		out[i].Params = cloneValues(out[i].Params)
	}
	return out
}

// Decide approves or denies a pending Manual push. It returns ErrNotFound
// for an unknown txid and ErrNotPending if the push is not Manual or no
// longer waiting.
func (d *Duo) Decide(txid string, approve bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.byID[txid]
	if t == nil {
		return ErrNotFound
	}
	now := d.now()
	if t.outcome != Manual || t.state(now) != stateWaiting {
		return ErrNotPending
	}
	t.decided, t.approve = true, approve
	close(t.done)
	return nil
}

// WaitForPush returns the oldest push that WaitForPush has not yet returned,
// waiting for one to be created if need be. So a test may start an auth call
// and then wait, in either order, without missing the push.
func (d *Duo) WaitForPush(ctx context.Context) (Push, error) {
	for {
		d.mu.Lock()
		if d.waitNext < len(d.txs) {
			t := d.txs[d.waitNext]
			d.waitNext++
			p := t.snapshot(d.now())
			d.mu.Unlock()
			return p, nil
		}
		pushed := d.pushed
		d.mu.Unlock()
		select {
		case <-pushed:
		case <-ctx.Done():
			return Push{}, ctx.Err()
		}
	}
}

// shutdown releases synchronous auth calls blocked in ServeHTTP.
func (d *Duo) shutdown() {
	d.stopOnce.Do(func() { close(d.stop) })
}

// ServeHTTP serves the Duo Auth API v2 endpoints.
func (d *Duo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	params, perr := readParams(w, r)
	idx := d.record(r, params)
	sw := &statusWriter{ResponseWriter: w}
	defer func() { d.finish(idx, sw.status) }()

	ep, ok := endpoints[r.URL.Path]
	switch {
	case !ok:
		writeFail(sw, &failure{http.StatusNotFound, 40401, "Resource not found", r.URL.Path})
		return
	case r.Method != ep.method:
		writeFail(sw, &failure{http.StatusMethodNotAllowed, 40501, "Method not allowed", r.Method})
		return
	case perr != nil:
		writeFail(sw, &failure{http.StatusBadRequest, 40002, "Invalid request parameters", perr.Error()})
		return
	}
	if ep.signed {
		if f := verify(r, params, d.ikey, d.skey, d.now()); f != nil {
			writeFail(sw, f)
			return
		}
		d.mu.Lock()
		d.reqs[idx].SignatureOK = true
		d.mu.Unlock()
	}
	ep.serve(d, sw, r, params)
}

type endpoint struct {
	method string
	signed bool
	serve  func(d *Duo, w http.ResponseWriter, r *http.Request, params url.Values)
}

var endpoints = map[string]endpoint{
	"/auth/v2/ping":        {http.MethodGet, false, (*Duo).serveTime},
	"/auth/v2/check":       {http.MethodGet, true, (*Duo).serveTime},
	"/auth/v2/preauth":     {http.MethodPost, true, (*Duo).servePreauth},
	"/auth/v2/auth":        {http.MethodPost, true, (*Duo).serveAuth},
	"/auth/v2/auth_status": {http.MethodGet, true, (*Duo).serveAuthStatus},
}

func readParams(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	if r.Method != http.MethodPost {
		v, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return url.Values{}, errors.New("query string")
		}
		return v, nil
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		return url.Values{}, errors.New("request body")
	}
	return r.PostForm, nil
}

func (d *Duo) record(r *http.Request, params url.Values) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reqs = append(d.reqs, Request{
		Method: r.Method,
		Path:   r.URL.Path,
		Params: cloneValues(params),
	})
	return len(d.reqs) - 1
}

func (d *Duo) finish(idx, status int) {
	d.mu.Lock()
	d.reqs[idx].Status = status
	d.mu.Unlock()
}

func (d *Duo) serveTime(w http.ResponseWriter, _ *http.Request, _ url.Values) {
	writeOK(w, map[string]int64{"time": d.now().Unix()})
}

// device is a preauth device entry.
type device struct {
	Device       string   `json:"device"`
	Type         string   `json:"type"`
	Name         string   `json:"name"`
	Number       string   `json:"number"`
	Capabilities []string `json:"capabilities"`
}

var testPhone = device{
	Device:       deviceID,
	Type:         "phone",
	Name:         deviceName,
	Number:       deviceNumber,
	Capabilities: []string{"auto", "push", "sms", "phone", "mobile_otp"},
}

func (d *Duo) servePreauth(w http.ResponseWriter, r *http.Request, params url.Values) {
	user, f := userParam(params)
	if f != nil {
		writeFail(w, f)
		return
	}
	d.mu.Lock()
	e, answers := d.take(user, callPreauth)
	d.mu.Unlock()
	if answers && e.outcome.isError() {
		writeScriptedError(w, e)
		return
	}
	type preauth struct {
		Result          string   `json:"result"`
		StatusMsg       string   `json:"status_msg"`
		EnrollPortalURL string   `json:"enroll_portal_url,omitempty"`
		Devices         []device `json:"devices,omitempty"`
	}
	var res preauth
	switch e.outcome {
	case PreauthAllow:
		res = preauth{Result: "allow", StatusMsg: "Allowing unknown user"}
	case PreauthDeny:
		res = preauth{Result: "deny", StatusMsg: "Access denied by policy."}
	case LockedOut:
		res = preauth{Result: "deny", StatusMsg: "Your account is locked out."}
	case Enroll:
		res = preauth{
			Result:          "enroll",
			StatusMsg:       "Enroll an authentication device to proceed",
			EnrollPortalURL: "https://" + r.Host + "/portal?code=" + randomHex(8),
		}
	default: // push outcomes
		res = preauth{Result: "auth", StatusMsg: "Account is active", Devices: []device{testPhone}}
	}
	writeOK(w, res)
}

func (d *Duo) serveAuth(w http.ResponseWriter, r *http.Request, params url.Values) {
	user, f := userParam(params)
	if f == nil {
		f = checkAuthParams(params)
	}
	var info url.Values
	raw := params.Get("pushinfo")
	if f == nil {
		var err error
		if info, err = url.ParseQuery(raw); err != nil {
			f = &failure{http.StatusBadRequest, 40002, "Invalid request parameters", "pushinfo"}
		}
	}
	if f != nil {
		writeFail(w, f)
		return
	}
	async := params.Get("async") == "1" || params.Get("async") == "true"

	d.mu.Lock()
	e, answers := d.take(user, callAuth)
	if answers && e.outcome.isError() {
		d.mu.Unlock()
		writeScriptedError(w, e)
		return
	}
	now := d.now()
	t := &tx{
		push: Push{
			TxID:            newTxID(),
			User:            user,
			Device:          params.Get("device"),
			Type:            params.Get("type"),
			DisplayUsername: params.Get("display_username"),
			PushInfo:        info,
			RawPushInfo:     raw,
			Async:           async,
			Created:         now,
		},
		outcome: e.outcome,
		ready:   now.Add(e.delay),
	}
	if e.outcome == Manual {
		t.done = make(chan struct{})
	}
	if d.PushTimeout > 0 && e.outcome.isPush() {
		t.expires = now.Add(d.PushTimeout)
	}
	d.txs = append(d.txs, t)
	d.byID[t.push.TxID] = t
	close(d.pushed)
	d.pushed = make(chan struct{})
	d.mu.Unlock()

	if async {
		writeOK(w, map[string]string{"txid": t.push.TxID})
		return
	}
	st, ok := d.await(r.Context(), t)
	if !ok {
		if r.Context().Err() == nil { // the fake is shutting down
			writeFail(w, &failure{http.StatusServiceUnavailable, 50301, "Service unavailable", "fake Duo closed"})
		}
		return
	}
	writeOK(w, st)
}

// await blocks until t leaves the waiting state, ctx ends, or the fake shuts
// down. It wakes only on a decision or at the next time-driven change.
func (d *Duo) await(ctx context.Context, t *tx) (state, bool) {
	for {
		d.mu.Lock()
		now := d.now()
		st := t.state(now)
		wait := t.untilChange(now)
		d.mu.Unlock()
		if st != stateWaiting {
			return st, true
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-t.done: // nil unless Manual
		case <-fire:
		case <-ctx.Done():
		case <-d.stop:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return state{}, false
		}
		select {
		case <-d.stop:
			return state{}, false
		default:
		}
	}
}

func (d *Duo) serveAuthStatus(w http.ResponseWriter, _ *http.Request, params url.Values) {
	txid := params.Get("txid")
	if txid == "" {
		writeFail(w, &failure{http.StatusBadRequest, 40001, "Missing required request parameters", "txid"})
		return
	}
	d.mu.Lock()
	t := d.byID[txid]
	if t == nil {
		d.mu.Unlock()
		writeFail(w, &failure{http.StatusBadRequest, 40002, "Invalid request parameters", "txid"})
		return
	}
	e, answers := d.take(t.push.User, callStatus)
	st := t.state(d.now())
	d.mu.Unlock()
	if answers && e.outcome.isError() {
		writeScriptedError(w, e)
		return
	}
	writeOK(w, st)
}

// userParam returns the username or user_id value; exactly one must be set.
func userParam(params url.Values) (string, *failure) {
	username, userID := params.Get("username"), params.Get("user_id")
	switch {
	case username == "" && userID == "":
		return "", &failure{http.StatusBadRequest, 40001, "Missing required request parameters", "username or user_id"}
	case username != "" && userID != "":
		return "", &failure{http.StatusBadRequest, 40002, "Invalid request parameters", "username and user_id both given"}
	case username != "":
		return username, nil
	default:
		return userID, nil
	}
}

func checkAuthParams(params url.Values) *failure {
	missing := func(name string) *failure {
		return &failure{http.StatusBadRequest, 40001, "Missing required request parameters", name}
	}
	invalid := func(name string) *failure {
		return &failure{http.StatusBadRequest, 40002, "Invalid request parameters", name}
	}
	switch factor := params.Get("factor"); factor {
	case "":
		return missing("factor")
	case "push":
	default:
		return invalid("factor")
	}
	switch dev := params.Get("device"); dev {
	case "":
		return missing("device")
	case "auto", deviceID:
	default:
		return invalid("device")
	}
	if len(params.Get("pushinfo")) > maxPushInfo {
		return invalid("pushinfo")
	}
	return nil
}

func writeScriptedError(w http.ResponseWriter, e entry) {
	switch e.outcome {
	case Unauthorized401:
		writeFail(w, errBadSignature)
	case RateLimited429:
		secs := e.retryAfter
		if secs < 0 {
			secs = 1
		}
		if secs > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(secs))
		}
		writeFail(w, &failure{http.StatusTooManyRequests, 42901, "Too Many Requests", ""})
	case ServerError500:
		// Not JSON, like an error page from a proxy in front of Duo: the
		// client's JSON decoding fails.
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintln(w, "<html><body><h1>500 Internal Server Error</h1></body></html>")
	}
}

func writeOK(w http.ResponseWriter, response any) {
	writeJSON(w, http.StatusOK, map[string]any{"stat": "OK", "response": response})
}

func writeFail(w http.ResponseWriter, f *failure) {
	body := map[string]any{"stat": "FAIL", "code": f.code, "message": f.message}
	if f.detail != "" {
		body["message_detail"] = f.detail
	}
	writeJSON(w, f.status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func cloneValues(v url.Values) url.Values {
	if v == nil {
		return nil
	}
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// newTxID returns a random UUID, the form of Duo's txids.
func newTxID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails, per crypto/rand
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := fmt.Sprintf("%x", b)
	return strings.Join([]string{h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]}, "-")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}
