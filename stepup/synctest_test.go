package stepup_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// Keys for fakes inside a bubble; not secrets.
const (
	bubbleIKey = "DIABCDEFGHIJKLMNOPQR"
	bubbleSKey = "0123456789abcdefghijABCDEFGHIJ0123456789"
	bubbleHost = "api-test.duosecurity.test"
)

// newBubble returns a fake Duo reached in-process (a bubble's clock stands
// still while a goroutine waits on a socket) and a Guard using it. Call it
// inside synctest.Test. wrap, if not nil, wraps the transport.
func newBubble(t *testing.T, cfg stepup.Config, wrap func(http.RoundTripper) http.RoundTripper) (*duotest.Duo, *stepup.Guard) {
	t.Helper()
	d := duotest.New(bubbleIKey, bubbleSKey)
	var rt = d.Transport()
	if wrap != nil {
		rt = wrap(rt)
	}
	cfg.IKey, cfg.SKey, cfg.Host = bubbleIKey, bubbleSKey, bubbleHost
	cfg.HTTPClient = &http.Client{Transport: rt}
	g, err := stepup.New(cfg)
	require.NoError(t, err)
	return d, g
}

func withKey(req stepup.Request, args string) stepup.Request {
	req.Key = stepup.CanonicalKey(req.Tool, []byte(args))
	return req
}

func TestGrants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{GrantTTL: 5 * time.Minute}, nil)
		d.Script("alice", duotest.Approve)
		req := request("alice")

		require.NoError(t, g.Approve(t.Context(), req, nil))
		assert.Len(t, d.Pushes(), 1)

		// The same call, its arguments written differently: covered.
		time.Sleep(4 * time.Minute)
		progressed := false
		same := withKey(req, `{ "limit": 10, "query": "defence contractors" }`)
		require.NoError(t, g.Approve(t.Context(), same, func(string) { progressed = true }))
		assert.Len(t, d.Pushes(), 1, "a live grant must not push")
		assert.False(t, progressed, "a grant needs no progress")

		// Other arguments: a push of their own.
		require.NoError(t, g.Approve(t.Context(), withKey(req, `{"query":"defence contractors","limit":11}`), nil))
		assert.Len(t, d.Pushes(), 2)

		// After GrantTTL: a push again.
		time.Sleep(time.Minute + time.Second)
		require.NoError(t, g.Approve(t.Context(), req, nil))
		assert.Len(t, d.Pushes(), 3)
	})
}

func TestNoGrants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{GrantTTL: stepup.NoGrants}, nil)
		d.Script("alice", duotest.Approve)
		for range 3 {
			require.NoError(t, g.Approve(t.Context(), request("alice"), nil))
		}
		assert.Len(t, d.Pushes(), 3)
	})
}

func TestBypassIsNotAGrant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{}, nil)
		d.Script("alice", duotest.PreauthAllow)
		require.NoError(t, g.Approve(t.Context(), request("alice"), nil))
		d.Script("alice", duotest.PreauthDeny)
		err := g.Approve(t.Context(), request("alice"), nil)
		assert.True(t, stepup.IsOutcome(err, stepup.PreauthDenied), "got %v", err)
		assert.Empty(t, d.Pushes())
	})
}

func TestDenialCooldown(t *testing.T) {
	for _, o := range []duotest.Outcome{duotest.Deny, duotest.Fraud} {
		t.Run(o.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d, g := newBubble(t, stepup.Config{DenyCooldown: 90 * time.Second}, nil)
				d.Script("bob", o)
				req := request("bob")

				err := g.Approve(t.Context(), req, nil)
				require.Error(t, err)
				assert.Len(t, d.Pushes(), 1)

				// The same call and another one: refused at once, no push.
				d.Script("bob", duotest.Approve)
				for _, r := range []stepup.Request{req, withKey(req, `{"other":true}`)} {
					start := time.Now()
					err = g.Approve(t.Context(), r, nil)
					require.True(t, stepup.IsOutcome(err, stepup.CoolingDown), "got %v", err)
					assert.Contains(t, err.Error(), "(in 1m30s)")
					assert.Zero(t, time.Since(start), "cooldown must answer at once")
				}
				assert.Len(t, d.Pushes(), 1)

				// Other users are not affected.
				d.Script("carol", duotest.Approve)
				require.NoError(t, g.Approve(t.Context(), request("carol"), nil))

				// After the cooldown the denial left no grant: a new push.
				time.Sleep(90 * time.Second)
				require.NoError(t, g.Approve(t.Context(), req, nil))
				assert.Len(t, d.Pushes(), 3)
			})
		})
	}
}

func TestDenialRevokesGrants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{DenyCooldown: time.Minute, MaxPushes: 10}, nil)
		d.Script("alice", duotest.Approve)
		a, b := request("alice"), withKey(request("alice"), `{"query":"military"}`)
		require.NoError(t, g.Approve(t.Context(), a, nil))
		require.NoError(t, g.Approve(t.Context(), b, nil))

		// A plain denial of a third call revokes a's and b's grants: the
		// cooldown refuses a, and after it a needs a push again.
		d.Script("alice", duotest.Deny)
		err := g.Approve(t.Context(), withKey(a, `{"q":3}`), nil)
		require.True(t, stepup.IsOutcome(err, stepup.Denied), "got %v", err)
		err = g.Approve(t.Context(), a, nil)
		require.True(t, stepup.IsOutcome(err, stepup.CoolingDown), "a denial leaves no grant to serve a: got %v", err)
		time.Sleep(time.Minute)
		d.Script("alice", duotest.Approve)
		pushes := len(d.Pushes())
		require.NoError(t, g.Approve(t.Context(), a, nil))
		assert.Len(t, d.Pushes(), pushes+1, "a's grant should be gone after the denial")
		require.NoError(t, g.Approve(t.Context(), b, nil))
		assert.Len(t, d.Pushes(), pushes+2, "b's grant should be gone after the denial")

		// Fraud revokes every grant.
		d.Script("alice", duotest.Fraud)
		err = g.Approve(t.Context(), withKey(a, `{"q":4}`), nil)
		require.True(t, stepup.IsOutcome(err, stepup.Fraud), "got %v", err)
		time.Sleep(time.Minute)
		d.Script("alice", duotest.Approve)
		pushes = len(d.Pushes())
		require.NoError(t, g.Approve(t.Context(), b, nil))
		assert.Len(t, d.Pushes(), pushes+1, "b's grant should be gone")
	})
}

func TestOurTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 29 s: no poll (every 2 s) or progress tick (every 5 s) falls on
		// the deadline itself, where their order would be a coin toss.
		d, g := newBubble(t, stepup.Config{Timeout: 29 * time.Second}, nil)
		d.Script("alice", duotest.Manual) // nobody decides
		var progress []time.Duration
		start := time.Now()
		err := g.Approve(t.Context(), request("alice"), func(string) { progress = append(progress, time.Since(start)) })
		require.True(t, stepup.IsOutcome(err, stepup.TimedOut), "got %v", err)
		assert.Equal(t, 29*time.Second, time.Since(start))
		assert.Equal(t, []time.Duration{0, 5 * time.Second, 10 * time.Second, 15 * time.Second, 20 * time.Second, 25 * time.Second}, progress)
		// Polled at the default pace: at 0, 2, 4 ... 28 s.
		assert.Len(t, requests(d, "/auth/v2/auth_status"), 15)

		// A timeout starts no cooldown.
		d.Script("alice", duotest.Approve)
		require.NoError(t, g.Approve(t.Context(), request("alice"), nil))
		assert.Len(t, d.Pushes(), 2)
	})
}

func TestCallerDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{}, nil)
		d.Script("alice", duotest.Manual)
		ctx, cancel := context.WithTimeout(t.Context(), 12*time.Second)
		defer cancel()
		start := time.Now()
		err := g.Approve(ctx, request("alice"), nil)
		require.True(t, stepup.IsOutcome(err, stepup.TimedOut), "got %v", err)
		assert.Equal(t, 12*time.Second, time.Since(start))
	})
}

func TestCancelWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{}, nil)
		d.Script("alice", duotest.Manual)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		var progress int
		go func() { done <- g.Approve(ctx, request("alice"), func(string) { progress++ }) }()

		time.Sleep(7 * time.Second)
		synctest.Wait()
		require.Len(t, d.Pending(), 1)
		cancel()
		synctest.Wait() // no time passes: the answer is there at once
		var err error
		select {
		case err = <-done:
		default:
			t.Fatal("Approve did not return when its context was cancelled")
		}
		require.True(t, stepup.IsOutcome(err, stepup.Cancelled), "got %v", err)
		assert.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, 2, progress)

		// The user approves after the client gave up: the push still
		// counts, for the same call retried.
		time.Sleep(5 * time.Second)
		require.NoError(t, d.Decide(d.Pending()[0].TxID, true))
		time.Sleep(3 * time.Second) // one poll
		require.NoError(t, g.Approve(t.Context(), request("alice"), nil))
		assert.Len(t, d.Pushes(), 1)
	})
}

func TestIdenticalCallsSharePush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{}, nil)
		d.Script("alice", duotest.Approve, duotest.AfterDelay(7*time.Second))
		d.Script("dave", duotest.Approve)
		d.Script("carol", duotest.Manual)

		const n = 50
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = g.Approve(t.Context(), request("alice"), nil) })
		}
		carol := make(chan error, 1)
		go func() { carol <- g.Approve(t.Context(), request("carol"), nil) }()
		synctest.Wait()

		// While alice's and carol's pushes wait, dave is not held up.
		start := time.Now()
		require.NoError(t, g.Approve(t.Context(), request("dave"), nil))
		assert.Zero(t, time.Since(start))

		wg.Wait()
		for i, err := range errs {
			assert.NoError(t, err, "call %d", i)
		}
		alice := 0
		for _, p := range d.Pushes() {
			if p.User == "alice" {
				alice++
			}
		}
		assert.Equal(t, 1, alice, "identical calls must share one push")

		p := d.Pending()
		require.Len(t, p, 1)
		require.NoError(t, d.Decide(p[0].TxID, true))
		require.NoError(t, <-carol)
	})
}

func TestOtherCallWaitsForOutstandingPush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{}, nil)
		d.Script("alice", duotest.Manual)
		first := make(chan error, 1)
		go func() { first <- g.Approve(t.Context(), request("alice"), nil) }()
		synctest.Wait()

		second := make(chan error, 1)
		var msgs []string
		var mu sync.Mutex
		other := withKey(request("alice"), `{"query":"military"}`)
		go func() {
			second <- g.Approve(t.Context(), other, func(m string) { mu.Lock(); msgs = append(msgs, m); mu.Unlock() })
		}()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		assert.Len(t, d.Pushes(), 1, "a second push while one is outstanding")

		require.NoError(t, d.Decide(d.Pending()[0].TxID, true))
		require.NoError(t, <-first)
		time.Sleep(time.Second)
		synctest.Wait()
		pending := d.Pending()
		require.Len(t, pending, 1, "the second call pushes once the first is answered")
		require.NoError(t, d.Decide(pending[0].TxID, false))
		err := <-second
		assert.True(t, stepup.IsOutcome(err, stepup.Denied), "got %v", err)

		mu.Lock()
		defer mu.Unlock()
		require.NotEmpty(t, msgs)
		assert.Equal(t, "Waiting for an earlier Duo Push to finish before asking about tool list_contacts", msgs[0])
		assert.Equal(t, "Waiting for Duo Push approval on your phone (tool list_contacts)", msgs[len(msgs)-1])
	})
}

func TestPushCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{MaxPushes: 3, GrantTTL: stepup.NoGrants}, nil)
		d.Script("alice", duotest.Approve)
		d.Script("bob", duotest.Approve)
		for i := range 3 {
			require.NoError(t, g.Approve(t.Context(), request("alice"), nil))
			time.Sleep(time.Minute * time.Duration(i+1)) // pushes at 0, 1 and 3 minutes
		}
		// At 6 minutes: the cap holds until the first push is 10 minutes old.
		err := g.Approve(t.Context(), request("alice"), nil)
		require.True(t, stepup.IsOutcome(err, stepup.TooManyPushes), "got %v", err)
		assert.Contains(t, err.Error(), "(in 4m0s)")
		assert.Len(t, d.Pushes(), 3)

		// Other users have caps of their own.
		require.NoError(t, g.Approve(t.Context(), request("bob"), nil))

		time.Sleep(4 * time.Minute)
		require.NoError(t, g.Approve(t.Context(), request("alice"), nil))
		err = g.Approve(t.Context(), request("alice"), nil)
		assert.True(t, stepup.IsOutcome(err, stepup.TooManyPushes), "sliding window: got %v", err)
	})
}

// A 429 on the auth POST: the push is retried with its full, freshly
// signed body and is sent exactly once.
func TestRateLimitedPush(t *testing.T) {
	for _, retryAfter := range []int{3, 0} {
		t.Run(fmt.Sprintf("Retry-After %d", retryAfter), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var d *duotest.Duo
				d, g := newBubble(t, stepup.Config{}, func(rt http.RoundTripper) http.RoundTripper {
					return &hookTransport{base: rt, path: "/auth/v2/preauth", after: func() {
						d.Script("alice", duotest.RateLimited429, duotest.Times(2), duotest.RetryAfter(retryAfter))
					}}
				})
				d.Script("alice", duotest.Approve)
				start := time.Now()
				require.NoError(t, g.Approve(t.Context(), request("alice"), nil))
				if retryAfter > 0 {
					assert.Equal(t, 2*time.Duration(retryAfter)*time.Second, time.Since(start))
				} else {
					assert.Equal(t, 3*time.Second, time.Since(start), "backoff 1 s, then 2 s")
				}

				auths := requests(d, "/auth/v2/auth")
				require.Len(t, auths, 3)
				for i, r := range auths {
					assert.Equal(t, auths[0].Params, r.Params, "attempt %d", i)
					assert.True(t, r.SignatureOK, "attempt %d", i)
					for _, p := range []string{"username", "factor", "device", "async", "type", "display_username", "pushinfo"} {
						assert.NotEmpty(t, r.Params.Get(p), "attempt %d: %s", i, p)
					}
				}
				assert.Equal(t, []int{429, 429, 200}, []int{auths[0].Status, auths[1].Status, auths[2].Status})
				assert.Len(t, d.Pushes(), 1)
			})
		})
	}
}

func TestRateLimitedUntilDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{Timeout: 10 * time.Second}, nil)
		d.Script("alice", duotest.RateLimited429, duotest.RetryAfter(0))
		start := time.Now()
		err := g.Approve(t.Context(), request("alice"), nil)
		require.True(t, stepup.IsOutcome(err, stepup.RateLimited), "got %v", err)
		// Backoff 1, 2, 4 s; the next 8 s would pass the deadline.
		assert.Equal(t, 7*time.Second, time.Since(start))
		assert.Len(t, requests(d, "/auth/v2/preauth"), 4)
		assert.False(t, strings.Contains(err.Error(), bubbleSKey))
	})
}

func TestOnceIsNeitherGrantedNorShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{GrantTTL: 5 * time.Minute}, nil)
		d.Script("alice", duotest.Approve)
		req := request("alice")
		req.Once = true
		require.NoError(t, g.Approve(t.Context(), req, nil))
		require.NoError(t, g.Approve(t.Context(), req, nil))
		assert.Len(t, d.Pushes(), 2, "an approval for a one-off call is not a grant")

		// Identical one-off calls at once: each its own push, in turn.
		d.Script("alice", duotest.Approve, duotest.AfterDelay(time.Second))
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() { assert.NoError(t, g.Approve(t.Context(), req, nil)) })
		}
		wg.Wait()
		assert.Len(t, d.Pushes(), 5, "identical one-off calls do not share a push")
	})
}

func TestBlocked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{DenyCooldown: time.Minute, MaxPushes: 2, GrantTTL: stepup.NoGrants}, nil)
		assert.NoError(t, g.Blocked("alice"), "an unknown user is not blocked")

		d.Script("alice", duotest.Deny)
		require.Error(t, g.Approve(t.Context(), request("alice"), nil))
		err := g.Blocked("alice")
		assert.True(t, stepup.IsOutcome(err, stepup.CoolingDown), "%v", err)
		assert.NoError(t, g.Blocked("bob"))

		time.Sleep(time.Minute)
		assert.NoError(t, g.Blocked("alice"), "after the cooldown")
		d.Script("alice", duotest.Approve)
		require.NoError(t, g.Approve(t.Context(), request("alice"), nil))
		err = g.Blocked("alice")
		assert.True(t, stepup.IsOutcome(err, stepup.TooManyPushes), "two pushes of two allowed: %v", err)
		time.Sleep(10 * time.Minute)
		assert.NoError(t, g.Blocked("alice"))
	})
}

// TestLimits: the push page of crm-mcp dev shows where a user stands, and
// each refusal of the fatigue guard names the setting that changes it.
func TestLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, g := newBubble(t, stepup.Config{DenyCooldown: 30 * time.Second, MaxPushes: 2}, nil)
		start := time.Now()
		l, err := g.Limits(t.Context(), "alice")
		require.NoError(t, err)
		assert.Equal(t, stepup.Limits{MaxPushes: 2, DenyCooldown: 30 * time.Second}, l)

		d.Script("alice", duotest.Approve)
		require.NoError(t, g.Approve(t.Context(), withKey(request("alice"), `{"q":1}`), nil))
		d.Script("alice", duotest.Deny)
		err = g.Approve(t.Context(), withKey(request("alice"), `{"q":2}`), nil)
		require.True(t, stepup.IsOutcome(err, stepup.Denied), "got %v", err)

		l, err = g.Limits(t.Context(), "alice")
		require.NoError(t, err)
		assert.Equal(t, 2, l.Pushes)
		assert.Equal(t, start.Add(10*time.Minute), l.NextPush, "the cap frees up when the first push leaves the window")
		assert.Equal(t, time.Now().Add(30*time.Second), l.CoolUntil)

		err = g.Approve(t.Context(), withKey(request("alice"), `{"q":3}`), nil)
		require.True(t, stepup.IsOutcome(err, stepup.CoolingDown), "got %v", err)
		assert.Contains(t, err.Error(), "STEPUP_DENY_COOLDOWN")
		assert.Contains(t, g.BlockedContext(t.Context(), "alice").Error(), "STEPUP_DENY_COOLDOWN")

		time.Sleep(31 * time.Second)
		err = g.Approve(t.Context(), withKey(request("alice"), `{"q":4}`), nil)
		require.True(t, stepup.IsOutcome(err, stepup.TooManyPushes), "got %v", err)
		assert.Contains(t, err.Error(), "STEPUP_MAX_PUSHES")
		assert.Contains(t, g.BlockedContext(t.Context(), "alice").Error(), "STEPUP_MAX_PUSHES")
		l, err = g.Limits(t.Context(), "alice")
		require.NoError(t, err)
		assert.True(t, l.CoolUntil.IsZero(), "the cooldown is over")
	})
}
