package stepup

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"
)

// staleAfter is how long past its deadline a flight recorded in a State may
// go without landing before Guards take its owner for dead: the owner lands
// within milliseconds of its deadline unless its process died or lost the
// State. Until then, callers wait for it; after it, the flight no longer
// holds up the user's other calls (its own waiters have failed closed).
const staleAfter = 5 * time.Second

// resultTTL is how long a State keeps a flight's result after it landed,
// for waiters that read it late.
const resultTTL = 2 * time.Minute

// State is what Guards remember between calls: per user, the grants, the
// deny cooldown, the pushes of the last ten minutes and the approval in
// progress, plus how recent approvals ended. [NewMemoryState] keeps it in
// the process and is the default; stepup/pgstate keeps it in Postgres, so
// that the replicas of a server behind a load balancer share it: an
// approval on one covers the same call on the others, a denial on one
// cools all down, the push cap counts pushes from all, and identical calls
// arriving at different replicas share one push.
//
// Implementations are safe for concurrent use. An error from any method
// makes the Guard fail closed: the call is not run.
type State interface {
	// Update runs fn on user's record and stores what fn left in it.
	// Updates and Lands of one user never overlap, across every Guard
	// sharing the State; fn must not call the State. A user with no
	// record gets an empty one, and a record that fn leaves empty may be
	// deleted.
	Update(ctx context.Context, user string, fn func(*UserState)) error

	// Land ends the approval flightID of user: in one step, it runs fn on
	// the record as Update does and records r, which Await returns from
	// then on, for a while, to every Guard sharing the State: all of r,
	// so that a call that waited on another Guard's push is audited with
	// the same By and TxID as the call that sent it.
	Land(ctx context.Context, user, flightID string, r Result, fn func(*UserState)) error

	// Await returns the result of flightID once it has landed. It returns
	// ctx.Err() if ctx ends first: a flight whose owner died never lands,
	// and its waiters give up at their deadline.
	Await(ctx context.Context, flightID string) (Result, error)

	// Sweep deletes what has expired: records whose Expiry is not after
	// now, and results older than a couple of minutes (by the runtime
	// clock). Guards call it about once a minute.
	Sweep(ctx context.Context, now time.Time) error
}

// Result is how an approval ended, as shared with the callers waiting for
// it. A zero Outcome means approved.
type Result struct {
	Outcome Outcome `json:"outcome,omitempty"`
	// Msg is the *Error's message, safe to show to the MCP client.
	Msg string `json:"msg,omitempty"`
	// By is how an approval came about (see Approval.By); TxID names the
	// Duo Push, when one was sent, approved or not.
	By   string `json:"by,omitempty"`
	TxID string `json:"txid,omitempty"`
}

// resultOf turns the end of a flight into a Result.
func resultOf(err error) Result {
	if err == nil {
		return Result{}
	}
	if e, ok := err.(*Error); ok {
		return Result{Outcome: e.Outcome, Msg: e.Msg}
	}
	// Not reached: obtain returns only *Error. Fail closed anyway.
	return Result{Outcome: Unavailable, Msg: "The approval failed, so the call was not run."}
}

// err turns a Result back into what Approve returns: nil for an approval,
// else an *Error that unwraps to the context error a timeout or a
// cancellation had in the process that saw it.
func (r Result) err() error {
	if r.Outcome == "" {
		return nil
	}
	var cause error
	switch r.Outcome {
	case TimedOut:
		cause = context.DeadlineExceeded
	case Cancelled:
		cause = context.Canceled
	}
	return &Error{Outcome: r.Outcome, Msg: r.Msg, TxID: r.TxID, err: cause}
}

// UserState is what a Guard remembers about one user. Its contents are the
// Guard's business: a State stores it as it is (in memory) or as JSON
// (MarshalJSON, UnmarshalJSON), and may read its Expiry.
type UserState struct {
	grants    map[string]time.Time // hashed Key -> expiry
	coolUntil time.Time
	pushes    []time.Time   // pushes sent in the last pushWindow, oldest first
	flight    *flightRecord // the approval in progress; at most one per user
}

// flightRecord is the approval in progress, as every Guard sees it.
type flightRecord struct {
	ID       string    `json:"id"`
	Key      string    `json:"key"` // hashed Key of the request that started it
	Once     bool      `json:"once,omitempty"`
	Deadline time.Time `json:"deadline"` // runtime clock, like context deadlines
}

// userStateJSON is UserState's stored form.
type userStateJSON struct {
	Grants    map[string]time.Time `json:"grants,omitempty"`
	CoolUntil time.Time            `json:"cool_until,omitzero"`
	Pushes    []time.Time          `json:"pushes,omitempty"`
	Flight    *flightRecord        `json:"flight,omitempty"`
}

// MarshalJSON encodes the record for a State that stores it elsewhere.
// Grant keys are hashes, so no call's arguments are stored.
func (u *UserState) MarshalJSON() ([]byte, error) {
	return json.Marshal(userStateJSON{Grants: u.grants, CoolUntil: u.coolUntil, Pushes: u.pushes, Flight: u.flight})
}

// UnmarshalJSON decodes what MarshalJSON encoded.
func (u *UserState) UnmarshalJSON(b []byte) error {
	var j userStateJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*u = UserState{grants: j.Grants, coolUntil: j.CoolUntil, pushes: j.Pushes, flight: j.Flight}
	return nil
}

// Expiry returns the moment after which nothing in the record matters any
// more, or the zero time for a record with nothing in it. A State may
// delete a record once its Expiry has passed.
func (u *UserState) Expiry() time.Time {
	var exp time.Time
	later := func(t time.Time) {
		if t.After(exp) {
			exp = t
		}
	}
	for _, t := range u.grants {
		later(t)
	}
	later(u.coolUntil)
	if n := len(u.pushes); n > 0 {
		later(u.pushes[n-1].Add(pushWindow))
	}
	if u.flight != nil {
		later(u.flight.Deadline.Add(staleAfter))
	}
	return exp
}

// prune drops what has expired at now (the Guard's clock), and a flight
// recorded by a Guard that has not landed it long after its deadline
// (runtime clock), unless this Guard owns it.
func (u *UserState) prune(now time.Time, owned func(id string) bool) {
	for k, exp := range u.grants {
		if !now.Before(exp) {
			delete(u.grants, k)
		}
	}
	u.prunePushes(now)
	if f := u.flight; f != nil && !owned(f.ID) && time.Now().After(f.Deadline.Add(staleAfter)) {
		u.flight = nil
	}
}

func (u *UserState) prunePushes(now time.Time) {
	i := 0
	for i < len(u.pushes) && !now.Before(u.pushes[i].Add(pushWindow)) {
		i++
	}
	u.pushes = u.pushes[i:]
}

// hashKey keeps a request's Key, which holds its arguments, out of the
// State: grants and flights are found by its SHA-256.
func hashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

func newFlightID() string {
	return rand.Text()
}

// NewMemoryState returns a State kept in this process's memory: the
// default, for one process. Guards given the same memory State share it
// like replicas sharing a database.
func NewMemoryState() State {
	return &memoryState{
		users:   make(map[string]*UserState),
		results: make(map[string]memoryResult),
		landed:  make(map[string]chan struct{}),
	}
}

type memoryState struct {
	mu      sync.Mutex
	users   map[string]*UserState
	results map[string]memoryResult
	landed  map[string]chan struct{} // closed when the flight lands
}

type memoryResult struct {
	r       Result
	expires time.Time // runtime clock
}

func (m *memoryState) Update(_ context.Context, user string, fn func(*UserState)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.update(user, fn)
	return nil
}

// update runs fn on user's record. The caller holds m.mu.
func (m *memoryState) update(user string, fn func(*UserState)) {
	us := m.users[user]
	if us == nil {
		us = &UserState{grants: make(map[string]time.Time)}
	}
	fn(us)
	if us.Expiry().IsZero() {
		delete(m.users, user)
	} else {
		m.users[user] = us
	}
}

func (m *memoryState) Land(_ context.Context, user, flightID string, r Result, fn func(*UserState)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.update(user, fn)
	m.results[flightID] = memoryResult{r: r, expires: time.Now().Add(resultTTL)}
	if ch, ok := m.landed[flightID]; ok {
		close(ch)
		delete(m.landed, flightID)
	}
	return nil
}

func (m *memoryState) Await(ctx context.Context, flightID string) (Result, error) {
	m.mu.Lock()
	if res, ok := m.results[flightID]; ok {
		m.mu.Unlock()
		return res.r, nil
	}
	ch, ok := m.landed[flightID]
	if !ok {
		ch = make(chan struct{})
		m.landed[flightID] = ch
	}
	m.mu.Unlock()
	select {
	case <-ch:
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.results[flightID].r, nil
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

func (m *memoryState) Sweep(_ context.Context, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, us := range m.users {
		if !now.Before(us.Expiry()) {
			delete(m.users, name)
		}
	}
	rt := time.Now()
	for id, res := range m.results {
		if !rt.Before(res.expires) {
			delete(m.results, id)
		}
	}
	return nil
}
