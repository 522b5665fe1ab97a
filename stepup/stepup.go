package stepup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultPushType     = "AI agent"
	DefaultServerName   = "crm-mcp"
	DefaultTimeout      = 60 * time.Second
	DefaultGrantTTL     = 5 * time.Minute
	DefaultMaxPushes    = 5
	DefaultDenyCooldown = 60 * time.Second
	DefaultPollInterval = 2 * time.Second
)

// NoGrants, as Config.GrantTTL, turns grants off: every sensitive call
// pushes, however recently the same call was approved.
const NoGrants time.Duration = -1

// pushWindow is the sliding window of Config.MaxPushes.
const pushWindow = 10 * time.Minute

// progressEvery is how often a waiting caller hears that it still waits.
const progressEvery = 5 * time.Second

// sweepEvery is how often state of users who went quiet is dropped.
const sweepEvery = time.Minute

// landTimeout bounds recording a flight's outcome in the State, which
// happens after the flight's own deadline may have passed.
const landTimeout = 10 * time.Second

// Request describes one call that needs approval.
type Request struct {
	// User is the Duo username (or user_id, see Config.UseUserID). The
	// caller takes it from the verified access token, never from a request
	// body: whoever names the user chooses whose phone is asked.
	User string
	// Tool is the MCP tool name, shown on the phone.
	Tool string
	// Reason says why the call is sensitive, e.g. `query mentions
	// "defence"`; shown on the phone.
	Reason string
	// Action is the sentence the approver reads first: what the call will
	// do, built by the tool from the request and the record it names, such
	// as "Update contact #3 Priya Raman (Ledgerstone Capital)". Required.
	Action string
	// Details are the rows under the action: one per field the call sets
	// or changes. Every field a write sets must be here.
	Details []Detail
	// ClientID is the OAuth client id of the agent, treated as opaque (it
	// may be a URL); logged, and shown on the phone as ClientLabel gives it.
	ClientID string
	// Key is the canonical identity of the call (see CanonicalKey). An
	// approval covers later calls with the same User and Key, and
	// simultaneous calls with the same User and Key share one push.
	Key string
	// RemoteIP, when set, is sent to Duo as ipaddr, for Duo's policies
	// and logs.
	RemoteIP string
	// Once makes the approval cover this call only: it is not remembered
	// as a grant, and identical calls waiting at the same time do not
	// share it. Set it for writes that are not idempotent, which one
	// approval must not let happen twice.
	Once bool
}

// Config configures a Guard. Zero values mean the defaults above.
type Config struct {
	// IKey, SKey and Host identify the Duo Auth API integration. Host is a
	// bare host[:port], such as "api-xxxxxxxx.duosecurity.com".
	IKey, SKey, Host string

	// CACertPEM, when set, holds the roots to trust INSTEAD of the Duo CA
	// bundle pinned by duo_api_golang: for a TLS-inspecting proxy, or a
	// test server. Certificates are still verified; there is no insecure
	// mode. New logs a warning when it is used.
	CACertPEM []byte

	// HTTPClient, when set, supplies the transport: its Transport (or
	// http.DefaultTransport if nil) carries every request, and CACertPEM is
	// ignored. Nothing else of it is used: deadlines come from Approve's
	// context and Config.Timeout, and redirects are never followed. Tests
	// inside testing/synctest pass duotest's Transport here.
	HTTPClient *http.Client

	// ServerName is shown on the phone as "server".
	ServerName string

	// PushType is the word Duo Mobile shows before "request".
	PushType string

	// UseUserID sends Request.User as user_id instead of username.
	UseUserID bool

	// Timeout bounds one Approve call as a whole: queueing behind another
	// push for the same user, preauth, the push and the wait for an answer.
	// A caller's context may end it sooner.
	Timeout time.Duration

	// GrantTTL is how long an approval covers later calls with the same
	// User and Key. NoGrants (any negative value) means every call pushes.
	GrantTTL time.Duration

	// MaxPushes caps pushes per user in any ten minutes, against push
	// fatigue (a person tapping Approve to make the phone stop).
	MaxPushes int

	// DenyCooldown is how long, after a push was denied or reported as
	// fraud, that user's sensitive calls fail at once without a push.
	DenyCooldown time.Duration

	// PollInterval is the least time between two auth_status calls. Real
	// Duo long-polls auth_status; each call is still bounded by the
	// deadline.
	PollInterval time.Duration

	// Logger receives decisions (never secrets). Nil discards them.
	Logger *slog.Logger

	// Now is the clock for grants, cooldowns and the push cap. Nil means
	// time.Now. Waits and deadlines use the runtime's timers; tests fake
	// both with testing/synctest. Guards sharing a State compare times
	// written by each other, so their clocks must agree (NTP), as Duo's
	// signatures already require.
	Now func() time.Time

	// State keeps grants, cooldowns, push counts and the approvals in
	// progress. Nil means a NewMemoryState of this Guard's own. Give the
	// Guards of several replicas one shared State (see stepup/pgstate) so
	// that they act as one.
	State State
}

// Guard asks Duo for approval of sensitive calls. It is safe for
// concurrent use.
//
// Grants, cooldowns, push counts and approvals in progress live in its
// State: by default in the Guard's memory, where a restart forgets them
// (which only ever means an extra push); or shared by several replicas.
type Guard struct {
	cfg   Config
	duo   *duoClient
	log   *slog.Logger
	state State

	mu        sync.Mutex
	flights   map[string]*flight // the flights this Guard owns, by id
	lastSweep time.Time
}

// flight is one approval in progress, as its waiters in this process see
// it: preauth, push and wait, run by this Guard (the owner) or by another
// Guard sharing the State. Callers with the same Key wait for its result;
// callers with another Key wait for it to end and then try again.
type flight struct {
	by, txid string        // how it was approved; the push sent, if any
	done     chan struct{} // closed after err and lost are set
	err      error
	// For a flight another Guard owns: lost says its owner did not land
	// it by its deadline (plus staleAfter); stop ends the wait for it.
	lost bool
	stop func()
}

// FieldError is a problem with one field of Config, in the manner of
// fs.PathError: Field is the field's name ("Host", "CACertPEM"), so that a
// caller can tell its user which setting is wrong with errors.As instead
// of parsing the message. Err never holds the secret key.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return "stepup: Config." + e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Validate reports every problem of c at once: a join of *FieldError
// values, or nil. New calls it.
func (c Config) Validate() error {
	var errs []error
	bad := func(field string, err error) { errs = append(errs, &FieldError{Field: field, Err: err}) }
	if c.IKey == "" {
		bad("IKey", errors.New("is empty: the integration key of the Duo Auth API application is required"))
	}
	if c.SKey == "" {
		bad("SKey", errors.New("is empty: the secret key of the Duo Auth API application is required"))
	}
	if c.Host == "" {
		bad("Host", errors.New("is empty: the API hostname of the Duo Auth API application, like api-xxxxxxxx.duosecurity.com, is required"))
	} else if err := checkHost(c.Host); err != nil {
		bad("Host", err)
	}
	if c.HTTPClient == nil && len(c.CACertPEM) > 0 {
		if _, err := parseRoots(c.CACertPEM); err != nil {
			bad("CACertPEM", err)
		}
	}
	for _, d := range []struct {
		field string
		val   time.Duration
	}{{"Timeout", c.Timeout}, {"DenyCooldown", c.DenyCooldown}, {"PollInterval", c.PollInterval}} {
		if d.val < 0 {
			bad(d.field, fmt.Errorf("is negative (%s)", d.val))
		}
	}
	if c.MaxPushes < 0 {
		bad("MaxPushes", fmt.Errorf("is negative (%d)", c.MaxPushes))
	}
	return errors.Join(errs...)
}

// New checks cfg, fills in defaults and builds the Duo client. It does not
// contact Duo; call Check for that. A bad cfg is refused with every
// problem at once, each a *FieldError (see Config.Validate).
func New(cfg Config) (*Guard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ServerName == "" {
		cfg.ServerName = DefaultServerName
	}
	if cfg.PushType == "" {
		cfg.PushType = DefaultPushType
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.GrantTTL == 0 {
		cfg.GrantTTL = DefaultGrantTTL
	}
	if cfg.MaxPushes == 0 {
		cfg.MaxPushes = DefaultMaxPushes
	}
	if cfg.DenyCooldown == 0 {
		cfg.DenyCooldown = DefaultDenyCooldown
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	duo, err := newDuoClient(&cfg)
	if err != nil {
		return nil, err
	}
	if cfg.HTTPClient == nil && len(cfg.CACertPEM) > 0 {
		log.Warn("stepup: trusting the configured CA certificates instead of Duo's pinned CA bundle", "host", cfg.Host)
	}
	cfg.SKey = "" // the Duo client has it; nothing else needs it
	state := cfg.State
	if state == nil {
		state = NewMemoryState()
	}
	return &Guard{cfg: cfg, duo: duo, log: log, state: state, flights: make(map[string]*flight)}, nil
}

// checkHost accepts a bare host or host:port, as duo_api_golang wants it.
func checkHost(h string) error {
	bad := fmt.Errorf("%q must be a bare host name, optionally with :port, like api-xxxxxxxx.duosecurity.com (no scheme, user, path or spaces)", truncate(h))
	if strings.ContainsAny(h, "/?#@ \t\r\n") {
		return bad
	}
	u, err := url.Parse("https://" + h)
	if err != nil || u.Host != h || u.Hostname() == "" {
		return bad
	}
	if _, port, err := net.SplitHostPort(h); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return bad
		}
	}
	return nil
}

// truncate keeps an error message readable when a value is huge.
func truncate(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// Check calls Duo's signed /auth/v2/check, which proves the host is
// reachable, the TLS roots fit and the keys and clock are right. It is for
// a `check` command and for readiness probes; it is bounded by ctx and by
// Config.Timeout.
func (g *Guard) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	const subject = "the Duo check"
	duoTime, err := g.duo.check(ctx, subject)
	if errors.Is(err, context.DeadlineExceeded) {
		// For a readiness probe, a Duo that does not answer is down.
		return newError(Unavailable, err, "Duo did not answer in time, so %s failed. The administrator should check the network path to DUO_AUTH_HOST.", subject)
	}
	if err != nil {
		return g.beforePush(err, subject)
	}
	if skew := time.Since(duoTime); skew > 30*time.Second || skew < -30*time.Second {
		// Duo refuses signatures dated more than a few minutes off.
		g.log.Warn("stepup: this server's clock differs from Duo's", "skew", skew.Round(time.Second))
	}
	return nil
}

// Approve asks the user to approve req with a Duo Push and waits for the
// answer. It returns nil when the call may run: approved now, covered by a
// live grant, or let through by Duo at preauth (a bypass, logged as a
// warning). Anything else is an *Error, and the call must not run.
//
// progress, which may be nil, is called on the caller's goroutine when
// Approve starts to wait (not for a grant or an immediate refusal) and then
// every few seconds, with a sentence to show the user.
//
// Approve returns promptly when ctx ends. The push it may have started goes
// on, in one goroutine per user at most, until its own deadline (that of the
// first caller, so at most Config.Timeout): an approval that arrives after
// the client gave up still becomes a grant for the same call retried.
func (g *Guard) Approve(ctx context.Context, req Request, progress func(msg string)) error {
	_, err := g.Authorize(ctx, req, progress)
	return err
}

// Approval says how Authorize approved a call.
type Approval struct {
	// By is "grant" (an earlier approval of the same call), "push" (the
	// user approved a Duo Push) or "bypass" (Duo's policy let the user
	// through without one).
	By string
	// TxID is the Duo transaction id of the push, when one was sent.
	TxID string
}

// Authorize is Approve, telling also how the call was approved: for an
// audit trail. A refusal's *Error carries the push's TxID, if one was
// sent.
func (g *Guard) Authorize(ctx context.Context, req Request, progress func(msg string)) (Approval, error) {
	if err := req.validate(); err != nil {
		return Approval{}, err
	}
	// A request that cannot be shown whole is refused before anything
	// else: the approver sees the truth, or there is no push.
	if _, err := pushInfo(g.cfg.ServerName, req); err != nil {
		return Approval{}, err
	}
	// The whole wait for one approval, queueing included, is bounded.
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	subject := "tool " + req.Tool
	for {
		if err := ctx.Err(); err != nil {
			return Approval{}, callerGone(err, subject)
		}
		f, own, err := g.admit(ctx, req, subject)
		if f == nil {
			if err == nil {
				return Approval{By: byGrant}, nil
			}
			return Approval{}, err // an immediate refusal
		}
		msg := fmt.Sprintf("Waiting for Duo Push approval on your phone (%s)", subject)
		if !own {
			msg = fmt.Sprintf("Waiting for an earlier Duo Push to finish before asking about %s", subject)
		}
		err = wait(ctx, f, progress, msg)
		if f.stop != nil {
			f.stop()
		}
		if err != nil {
			return Approval{}, callerGone(err, subject)
		}
		if f.lost {
			if err := ctx.Err(); err != nil {
				return Approval{}, callerGone(err, subject)
			}
			if own {
				g.log.Warn("stepup: the Guard that sent a push did not record its outcome in time", "user", req.User, "tool", req.Tool)
				return Approval{}, newError(TimedOut, context.DeadlineExceeded,
					"The server that sent the Duo Push for %s stopped before it recorded the answer, so the call was not run. Retry.", subject)
			}
			continue // the flight no longer holds this user up: look again
		}
		if own {
			if f.err != nil {
				return Approval{}, f.err
			}
			return Approval{By: f.by, TxID: f.txid}, nil
		}
		// Another Key's push ended: it may have left a cooldown, or used
		// up the cap. Look again.
	}
}

func (r Request) validate() error {
	var missing []string
	if r.User == "" {
		missing = append(missing, "User")
	}
	if r.Tool == "" {
		missing = append(missing, "Tool")
	}
	if r.Key == "" {
		missing = append(missing, "Key")
	}
	if r.Action == "" {
		missing = append(missing, "Action")
	}
	if len(missing) > 0 {
		return newError(Misconfigured, nil,
			"The approval request has no %s (a bug in this server), so the call was not run.", strings.Join(missing, ", "))
	}
	return nil
}

// admit decides, in one Update of the user's record, what a caller does
// next. It returns a nil flight with the final answer (nil for a live
// grant), or the flight to wait for and whether its result is the caller's
// own (same Key).
func (g *Guard) admit(ctx context.Context, req Request, subject string) (*flight, bool, error) {
	now := g.cfg.Now()
	g.sweep(ctx, now)
	key := hashKey(req.Key)
	dl, _ := ctx.Deadline() // always set: Approve added Timeout

	// The flight this caller would start, registered before it is recorded
	// so that no caller of this Guard takes it for another Guard's.
	id := newFlightID()
	mine := &flight{done: make(chan struct{})}
	g.mu.Lock()
	g.flights[id] = mine
	g.mu.Unlock()

	var (
		granted bool
		refusal error
		join    *flightRecord
		started bool
	)
	err := g.state.Update(ctx, req.User, func(us *UserState) {
		granted, refusal, join, started = false, nil, nil, false
		us.prune(now, g.owns)
		if exp, ok := us.grants[key]; ok && !req.Once && now.Before(exp) {
			granted = true
			return
		}
		if now.Before(us.coolUntil) {
			refusal = newError(CoolingDown, nil,
				"A Duo Push for this user was denied a moment ago, so sensitive calls are refused without a new push until %s; %s was not run. (%s)",
				until(now, us.coolUntil), subject, cooldownHint)
			return
		}
		if f := us.flight; f != nil {
			j := *f
			join = &j
			return
		}
		if len(us.pushes) >= g.cfg.MaxPushes {
			refusal = newError(TooManyPushes, nil,
				"Too many Duo Pushes for this user: %d in the last 10 minutes, the most allowed, so %s was not run. Try again after %s. (%s)",
				len(us.pushes), subject, until(now, us.pushes[0].Add(pushWindow)), capHint)
			return
		}
		us.flight = &flightRecord{ID: id, Key: key, Once: req.Once, Deadline: dl}
		started = true
	})
	if !started || err != nil {
		g.disown(id)
	}
	switch {
	case err != nil:
		return nil, false, g.stateFailed(ctx, err, subject)
	case granted:
		g.log.Info("stepup: approved by grant", "user", req.User, "tool", req.Tool, "client", req.ClientID)
		return nil, false, nil
	case IsOutcome(refusal, CoolingDown):
		g.log.Info("stepup: refused during cooldown", "user", req.User, "tool", req.Tool)
		return nil, false, refusal
	case refusal != nil:
		g.log.Warn("stepup: push cap reached", "user", req.User, "tool", req.Tool, "max", g.cfg.MaxPushes)
		return nil, false, refusal
	case join != nil:
		// A flight past its deadline is only finishing: its answer is
		// TimedOut, which must not be handed to a caller who just came.
		// (Read from the runtime clock, like the deadline itself: the
		// context's own timer may not have fired yet.)
		own := join.Key == key && !join.Once && !req.Once && time.Now().Before(join.Deadline)
		if f := g.owned(join.ID); f != nil {
			return f, own, nil
		}
		return g.await(ctx, *join), own, nil
	}
	// The flight must outlive a caller who goes away (see Approve), but not
	// the first caller's deadline; it keeps the context's values.
	fctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), dl)
	go func() {
		defer cancel()
		var txid string
		how, err := g.obtain(fctx, req, &txid)
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), landTimeout)
		defer cancel()
		g.land(lctx, mine, id, key, req, how, txid, err)
	}()
	return mine, true, nil
}

// owns reports whether this Guard runs flight id.
func (g *Guard) owns(id string) bool {
	return g.owned(id) != nil
}

func (g *Guard) owned(id string) *flight {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.flights[id]
}

func (g *Guard) disown(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.flights, id)
}

// await follows a flight another Guard owns, until it lands or, if its
// owner is gone, until staleAfter past its deadline (lost).
func (g *Guard) await(ctx context.Context, rec flightRecord) *flight {
	f := &flight{done: make(chan struct{})}
	actx, cancel := context.WithDeadline(ctx, rec.Deadline.Add(staleAfter))
	f.stop = cancel
	go func() {
		defer close(f.done)
		r, err := g.state.Await(actx, rec.ID)
		switch {
		case err == nil:
			f.err, f.by, f.txid = r.err(), r.By, r.TxID
		case actx.Err() != nil:
			f.lost = true // the caller's deadline or the owner's: Approve tells
		default:
			f.err = g.stateFailed(actx, err, "the call")
		}
	}()
	return f
}

// stateFailed maps a failure of the State: the call fails closed.
func (g *Guard) stateFailed(ctx context.Context, err error, subject string) error {
	if cerr := ctx.Err(); cerr != nil {
		return callerGone(cerr, subject)
	}
	g.log.Error("stepup: the step-up state failed", "error", err)
	return newError(Unavailable, err,
		"The step-up state could not be read or written, so %s was not run. Retry later; if it persists, the administrator should check the step-up state database.", subject)
}

// Blocked is BlockedContext for callers without a context; Config.Timeout
// bounds it.
func (g *Guard) Blocked(user string) error {
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.Timeout)
	defer cancel()
	return g.BlockedContext(ctx, user)
}

// BlockedContext returns the refusal a sensitive call of user would get
// right now without a push (a cooldown after a denial, or the push cap),
// or nil. Callers whose need for approval depends on the data a call
// touches ask it first, so that while no push can be sent, their refusals
// do not tell which records are sensitive. If the State fails, so does
// BlockedContext (Unavailable): the call must not run.
func (g *Guard) BlockedContext(ctx context.Context, user string) error {
	now := g.cfg.Now()
	var refusal error
	err := g.state.Update(ctx, user, func(us *UserState) {
		refusal = nil
		us.prune(now, g.owns)
		switch {
		case now.Before(us.coolUntil):
			refusal = newError(CoolingDown, nil,
				"A Duo Push for this user was denied a moment ago, so calls that name a record are refused until %s. (%s)", until(now, us.coolUntil), cooldownHint)
		case len(us.pushes) >= g.cfg.MaxPushes:
			refusal = newError(TooManyPushes, nil,
				"Too many Duo Pushes for this user in the last 10 minutes, so calls that name a record are refused until %s. (%s)", until(now, us.pushes[0].Add(pushWindow)), capHint)
		}
	})
	if err != nil {
		return g.stateFailed(ctx, err, "the call")
	}
	return refusal
}

// The refusals of the fatigue guard say which setting changes them, so an
// administrator (or someone trying the demo) reading one knows where to
// look. They name settings, never data.
const (
	cooldownHint = "The administrator sets how long with STEPUP_DENY_COOLDOWN."
	capHint      = "The administrator sets the cap with STEPUP_MAX_PUSHES."
)

// Limits is where a user stands against the fatigue guard, for a page
// that shows it (crm-mcp dev's push page).
type Limits struct {
	// Pushes is how many pushes were sent to the user in the last ten
	// minutes; MaxPushes is the cap.
	Pushes, MaxPushes int
	// NextPush is when the oldest of those pushes leaves the window:
	// the cap is free again then. Zero when the cap is not reached.
	NextPush time.Time
	// CoolUntil is when the cooldown after a denial ends; zero when the
	// user is not cooling down. DenyCooldown is its length.
	CoolUntil    time.Time
	DenyCooldown time.Duration
}

// Limits reads where user stands against the push cap and the cooldown.
// It changes nothing but expired entries.
func (g *Guard) Limits(ctx context.Context, user string) (Limits, error) {
	now := g.cfg.Now()
	l := Limits{MaxPushes: g.cfg.MaxPushes, DenyCooldown: g.cfg.DenyCooldown}
	err := g.state.Update(ctx, user, func(us *UserState) {
		us.prune(now, g.owns)
		l.Pushes = len(us.pushes)
		if l.Pushes >= g.cfg.MaxPushes {
			l.NextPush = us.pushes[0].Add(pushWindow)
		}
		if now.Before(us.coolUntil) {
			l.CoolUntil = us.coolUntil
		}
	})
	return l, err
}

// wait blocks until f is done or ctx ends, reporting progress meanwhile.
func wait(ctx context.Context, f *flight, progress func(string), msg string) error {
	report := func() {
		if progress != nil {
			progress(msg)
		}
	}
	report()
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	for {
		select {
		case <-f.done:
			return nil
		case <-tick.C:
			report()
		case <-ctx.Done():
			select {
			case <-f.done: // both ready: the answer wins
				return nil
			default:
			}
			return ctx.Err()
		}
	}
}

// How an approval came about; "" for none.
const (
	byPush   = "push"
	byBypass = "bypass"
	byGrant  = "grant"
)

// obtain runs one flight: preauth, push, wait. It returns how the call was
// approved, or an *Error, and sets *txid once a push is sent.
func (g *Guard) obtain(ctx context.Context, req Request, txid *string) (string, error) {
	subject := "tool " + req.Tool
	pre, err := g.duo.preauth(ctx, req, subject)
	if err != nil {
		return "", g.beforePush(err, subject)
	}
	switch pre.result {
	case "allow":
		return byBypass, nil
	case "deny":
		return "", newError(PreauthDenied, nil,
			"Duo denies this user (Duo says: %q), so %s was not run. Contact your Duo administrator.", pre.statusMsg, subject)
	case "enroll":
		if pre.enrollURL != "" {
			return "", newError(Enroll, nil,
				"This user has no Duo device enrolled, so %s was not run. Enroll at %s, then retry.", subject, pre.enrollURL)
		}
		return "", newError(Enroll, nil,
			"This user has no Duo device enrolled, so %s was not run. Ask your Duo administrator how to enroll, then retry.", subject)
	case "auth":
	default:
		return "", newError(Unavailable, nil,
			"Duo answered preauth with an unknown result %q, so %s was not run.", pre.result, subject)
	}

	// Counted before sending: a push whose answer we never read (a
	// network failure, say) may still have reached the phone. A push that
	// cannot be counted is not sent.
	if err := g.state.Update(ctx, req.User, func(us *UserState) {
		us.pushes = append(us.pushes, g.cfg.Now())
	}); err != nil {
		if ctx.Err() != nil {
			return "", g.beforePush(ctx.Err(), subject)
		}
		return "", g.stateFailed(ctx, err, subject)
	}

	info, err := pushInfo(g.cfg.ServerName, req) // checked by Approve
	if err != nil {
		return "", err
	}
	ans, err := g.duo.auth(ctx, req, g.cfg.PushType, info, subject)
	if err != nil {
		return "", g.beforePush(err, subject)
	}
	if ans.txid == "" {
		// Async auth always gives a txid; decide on a result if Duo gave
		// one instead, and fail closed if it gave neither.
		if how, final, err := g.judge(ans, subject); final {
			return how, err
		}
		return "", newError(Unavailable, nil, "Duo answered the push request without a transaction id, so %s was not run.", subject)
	}
	*txid = ans.txid
	g.log.Info("stepup: Duo Push sent", "user", req.User, "tool", req.Tool, "client", req.ClientID, "txid", ans.txid)

	for {
		started := time.Now()
		st, err := g.duo.authStatus(ctx, ans.txid, subject)
		if err != nil {
			if ctx.Err() != nil {
				return "", g.pushExpired(ctx.Err(), subject)
			}
			return "", err
		}
		if how, final, err := g.judge(st, subject); final {
			return how, err
		}
		next := time.NewTimer(g.cfg.PollInterval - time.Since(started))
		select {
		case <-next.C:
		case <-ctx.Done():
			next.Stop()
			return "", g.pushExpired(ctx.Err(), subject)
		}
	}
}

// judge reads an auth or auth_status answer. final is false while Duo is
// still waiting for the user.
func (g *Guard) judge(a authAnswer, subject string) (how string, final bool, err error) {
	if a.status == "timeout" { // final whatever result says
		return "", true, g.pushExpired(context.DeadlineExceeded, subject)
	}
	switch a.result {
	case "allow":
		if a.status == "bypass" {
			return byBypass, true, nil
		}
		return byPush, true, nil
	case "deny":
		switch a.status {
		case "fraud":
			return "", true, newError(Fraud, nil,
				"The Duo Push for %s was reported as fraud, so the call was not run. Your Duo administrator may be alerted; sensitive calls for this user are refused for %s.",
				subject, g.cfg.DenyCooldown)
		case "locked_out":
			return "", true, newError(LockedOut, nil,
				"Duo has locked this user out, so %s was not run. A Duo administrator must unlock the user.", subject)
		}
		return "", true, newError(Denied, nil,
			"The Duo Push for %s was denied, so the call was not run. Sensitive calls for this user are refused for %s.",
			subject, g.cfg.DenyCooldown)
	case "waiting":
		return "", false, nil
	}
	return "", true, newError(Unavailable, nil, "Duo answered with an unknown result %q, so %s was not run.", a.result, subject)
}

// beforePush maps the end of a flight's context before any push was sent:
// Duo was too slow to answer preauth or auth. Our deadline passing is
// TimedOut wherever it happens, so that the outcome does not depend on
// whether the caller or the flight noticed first.
func (g *Guard) beforePush(err error, subject string) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return newError(TimedOut, err,
			"Duo did not answer before the deadline, so %s was not run. Retry later; if it persists, the administrator should check the network path to DUO_AUTH_HOST.", subject)
	case errors.Is(err, context.Canceled):
		return newError(Cancelled, err, "The request was cancelled while contacting Duo, so %s was not run.", subject)
	}
	return err
}

// pushExpired maps the end of a flight's context after the push was sent.
func (g *Guard) pushExpired(err error, subject string) error {
	if errors.Is(err, context.Canceled) {
		return newError(Cancelled, err, "The request was cancelled while waiting for Duo Push approval, so %s was not run.", subject)
	}
	return newError(TimedOut, err,
		"The Duo Push for %s was not answered in time, so the call was not run. Retry and approve the push on your phone.", subject)
}

// land records a flight's result and releases its waiters. A denial is
// never remembered as an approval; only an approval by push becomes a grant
// (a bypass is Duo's decision to make afresh each time). A denial revokes
// every grant the user holds, for every client: a person who has just said
// no to one call means it, and must not see the agent go on with what an
// earlier approval still covers; everything sensitive asks again after the
// cooldown. Fraud and lock-out revoke them too.
//
// If the State cannot record the result, this Guard's waiters still get
// it; other Guards' waiters fail closed at the flight's deadline.
func (g *Guard) land(ctx context.Context, f *flight, id, key string, req Request, how, txid string, err error) {
	now := g.cfg.Now()
	var e0 *Error
	if errors.As(err, &e0) {
		e0.TxID = txid
	}
	res := resultOf(err)
	res.TxID = txid
	if err == nil {
		res.By = how
	}
	lerr := g.state.Land(ctx, req.User, id, res, func(us *UserState) {
		switch {
		case err == nil && how == byPush && g.cfg.GrantTTL > 0 && !req.Once:
			if us.grants == nil {
				us.grants = make(map[string]time.Time)
			}
			us.grants[key] = now.Add(g.cfg.GrantTTL)
		case IsOutcome(err, Denied) || IsOutcome(err, Fraud):
			// TimedOut starts no cooldown: an unanswered phone is not a
			// refusal, and the push cap already limits retries.
			us.coolUntil = now.Add(g.cfg.DenyCooldown)
		}
		if IsOutcome(err, Denied) || IsOutcome(err, Fraud) || IsOutcome(err, LockedOut) {
			// The user said no, says someone else is at work, or Duo
			// stopped trusting the account: earlier approvals no longer
			// stand either.
			clear(us.grants)
		}
		if us.flight != nil && us.flight.ID == id {
			us.flight = nil
		}
	})
	if lerr != nil {
		g.log.Error("stepup: could not record the outcome of an approval in the step-up state", "user", req.User, "tool", req.Tool, "error", lerr)
	}
	g.disown(id)
	f.err, f.by, f.txid = err, res.By, txid
	// Waiters are released after the log line, so it precedes whatever
	// the approved call does.
	defer close(f.done)

	attrs := []any{"user", req.User, "tool", req.Tool, "client", req.ClientID}
	var e *Error
	switch {
	case err == nil && how == byBypass:
		g.log.Warn("stepup: Duo bypass: approving without push", attrs...)
	case err == nil:
		g.log.Info("stepup: approved by Duo Push", attrs...)
	case errors.As(err, &e) && (e.Outcome == Misconfigured || e.Outcome == Unavailable || e.Outcome == RateLimited):
		g.log.Error("stepup: Duo failed", append(attrs, "outcome", e.Outcome, "error", e.Msg)...)
	case errors.As(err, &e) && e.Outcome == Fraud:
		g.log.Warn("stepup: Duo Push reported as fraud", append(attrs, "outcome", e.Outcome)...)
	case errors.As(err, &e):
		g.log.Info("stepup: not approved", append(attrs, "outcome", e.Outcome)...)
	default:
		g.log.Error("stepup: not approved", append(attrs, "error", err)...)
	}
}

// sweep asks the State, at most once per sweepEvery, to drop what has
// expired, so that storage follows the active users. A failure is logged:
// it costs space, not safety.
func (g *Guard) sweep(ctx context.Context, now time.Time) {
	g.mu.Lock()
	due := g.lastSweep.IsZero() || now.Sub(g.lastSweep) >= sweepEvery
	if due {
		g.lastSweep = now
	}
	g.mu.Unlock()
	if !due {
		return
	}
	if err := g.state.Sweep(ctx, now); err != nil && ctx.Err() == nil {
		g.log.Warn("stepup: could not sweep expired step-up state", "error", err)
	}
}
