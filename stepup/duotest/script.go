package duotest

import (
	"fmt"
	"time"
)

// Outcome is what the fake answers for a user.
type Outcome int

// The outcomes. Push outcomes (Approve, Deny, Fraud, Timeout, Manual) decide
// a push: preauth answers "auth" for them. Account outcomes (LockedOut,
// Enroll, PreauthAllow, PreauthDeny) decide at preauth and end any auth call
// at once without a push. Error outcomes (Unauthorized401, RateLimited429,
// ServerError500) fail every call made for the user, including auth_status on
// the user's transactions.
const (
	Approve         Outcome = iota // push approved: allow/allow
	Deny                           // push denied: deny/deny
	Fraud                          // push reported as fraud: deny/fraud
	Timeout                        // push not answered: deny/timeout
	LockedOut                      // preauth deny; auth deny/locked_out
	Enroll                         // preauth enroll with enroll_portal_url; auth deny/deny
	PreauthAllow                   // bypass: preauth allow; auth allow/bypass
	PreauthDeny                    // policy deny: preauth deny; auth deny/deny
	Unauthorized401                // HTTP 401, FAIL 40103
	RateLimited429                 // HTTP 429 with Retry-After, FAIL 42901
	ServerError500                 // HTTP 500 with a body that is not JSON
	Manual                         // push waits for Decide
	numOutcomes
)

var outcomeNames = [...]string{
	Approve:         "Approve",
	Deny:            "Deny",
	Fraud:           "Fraud",
	Timeout:         "Timeout",
	LockedOut:       "LockedOut",
	Enroll:          "Enroll",
	PreauthAllow:    "PreauthAllow",
	PreauthDeny:     "PreauthDeny",
	Unauthorized401: "Unauthorized401",
	RateLimited429:  "RateLimited429",
	ServerError500:  "ServerError500",
	Manual:          "Manual",
}

func (o Outcome) String() string {
	if o >= 0 && o < numOutcomes {
		return outcomeNames[o]
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

func (o Outcome) isPush() bool {
	return o == Approve || o == Deny || o == Fraud || o == Timeout || o == Manual
}

func (o Outcome) isError() bool {
	return o == Unauthorized401 || o == RateLimited429 || o == ServerError500
}

// call is the kind of request consulting a script.
type call int

const (
	callPreauth call = iota
	callAuth
	callStatus
)

// answers reports whether outcome o decides a call of kind c; only then does
// the call count against Times.
func (o Outcome) answers(c call) bool {
	switch {
	case o.isError():
		return true
	case o.isPush():
		return c == callAuth
	default: // account outcomes
		return c == callPreauth || c == callAuth
	}
}

// entry is one scripted outcome with its options.
type entry struct {
	outcome    Outcome
	delay      time.Duration
	retryAfter int // seconds; -1 means the default (1)
	times      int // 0: standing, until replaced
}

// ScriptOption refines a scripted outcome.
type ScriptOption func(*entry)

// AfterDelay makes a push outcome take effect d after the push was created:
// until then auth_status answers waiting/pushed and a synchronous auth blocks.
// Only for Approve, Deny, Fraud and Timeout.
func AfterDelay(d time.Duration) ScriptOption {
	return func(e *entry) {
		if d < 0 {
			panic("duotest: AfterDelay with a negative duration")
		}
		e.delay = d
	}
}

// RetryAfter sets the Retry-After header of a RateLimited429 answer, in
// seconds. The default is 1; 0 leaves the header out, as Duo sometimes does.
func RetryAfter(seconds int) ScriptOption {
	return func(e *entry) {
		if seconds < 0 {
			panic("duotest: RetryAfter with a negative number of seconds")
		}
		e.retryAfter = seconds
	}
}

// Times limits the outcome to the next n calls it answers (see Outcome for
// which calls those are); after that the user's next scripted outcome, or the
// default, applies.
func Times(n int) ScriptOption {
	return func(e *entry) {
		if n < 1 {
			panic("duotest: Times needs n >= 1")
		}
		e.times = n
	}
}

func newEntry(o Outcome, opts []ScriptOption) entry {
	if o < 0 || o >= numOutcomes {
		panic(fmt.Sprintf("duotest: unknown %v", o))
	}
	e := entry{outcome: o, retryAfter: -1}
	for _, opt := range opts {
		opt(&e)
	}
	if e.delay > 0 && (!o.isPush() || o == Manual) {
		panic(fmt.Sprintf("duotest: AfterDelay does not apply to %v", o))
	}
	if e.retryAfter >= 0 && o != RateLimited429 {
		panic(fmt.Sprintf("duotest: RetryAfter does not apply to %v", o))
	}
	return e
}

// userScript holds a user's Times-limited entries, consumed in order, and the
// standing outcome behind them.
type userScript struct {
	queue    []entry
	standing *entry
}

// Script sets what the fake answers for user, which is matched against the
// username or the user_id parameter, whichever the request carries.
//
// Without Times, o becomes the user's standing outcome, replacing any earlier
// one. With Times(n), o is queued behind the user's earlier Times entries and
// in front of the standing outcome, so
//
//	d.Script("alice", duotest.RateLimited429, duotest.Times(2))
//	d.Script("alice", duotest.Approve)
//
// rate-limits alice twice and then approves her. Script panics on an option
// that does not fit o.
func (d *Duo) Script(user string, o Outcome, opts ...ScriptOption) {
	e := newEntry(o, opts)
	d.mu.Lock()
	defer d.mu.Unlock()
	us := d.users[user]
	if us == nil {
		us = &userScript{}
		d.users[user] = us
	}
	if e.times > 0 {
		us.queue = append(us.queue, e)
	} else {
		us.standing = &e
	}
}

// SetDefault sets the outcome for users without a script of their own. The
// initial default is Deny: a fake that approves strangers would hide bugs.
// SetDefault panics if given Times.
func (d *Duo) SetDefault(o Outcome, opts ...ScriptOption) {
	e := newEntry(o, opts)
	if e.times > 0 {
		panic("duotest: SetDefault with Times")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.def = e
}

// take returns the entry that applies to a call of kind c for user and
// whether it decides the call, counting the call against Times if so. The
// caller holds d.mu.
func (d *Duo) take(user string, c call) (entry, bool) {
	us := d.users[user]
	if us == nil {
		return d.def, d.def.outcome.answers(c)
	}
	if len(us.queue) > 0 {
		e := us.queue[0]
		if !e.outcome.answers(c) {
			return e, false
		}
		us.queue[0].times--
		if us.queue[0].times == 0 {
			us.queue = us.queue[1:]
		}
		return e, true
	}
	if us.standing != nil {
		return *us.standing, us.standing.outcome.answers(c)
	}
	return d.def, d.def.outcome.answers(c)
}
