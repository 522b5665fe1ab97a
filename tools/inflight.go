package tools

import (
	"fmt"
	"net/http"
	"sync"
	"time"
)

// What a caller can make the server hold, beyond sessions (sessions.go),
// is requests in progress: a POST lasts as long as its tool call, and a
// call needing approval waits up to the push timeout for a person. Each is
// bounded per user (issuer and subject, as go-sdk's TokenInfo.UserID) and
// overall:
//
//   - POSTs in flight: past MaxRequestsPerUser or MaxRequests a POST gets
//     429 with Retry-After before any of it is read, so a refusal costs a
//     map lookup;
//   - calls waiting on a Duo Push: past MaxStepUpWaitingPerUser or
//     MaxStepUpWaiting a call that needs approval is refused as a tool
//     error (by then the response may be a stream whose status is sent),
//     before anything is pushed. The decision reads the request and the
//     counts alone, never the data a search would match.
const (
	DefaultMaxRequestsPerUser      = 16
	DefaultMaxRequests             = 512
	DefaultMaxStepUpWaitingPerUser = 4
	DefaultMaxStepUpWaiting        = 256
)

// Reasons given to Config.OnLimit, one per bound.
const (
	LimitRequestsPerUser      = "requests_per_user"
	LimitRequests             = "requests"
	LimitStepUpWaitingPerUser = "stepup_waiting_per_user"
	LimitStepUpWaiting        = "stepup_waiting"
)

// limitRetryAfter is the Retry-After of a refusal by a bound on requests
// in progress: most of those wait on a person, who answers within seconds
// or lets the push time out.
const limitRetryAfter = 10 * time.Second

// counter counts things held per user and overall, within bounds. It is
// safe for concurrent use.
type counter struct {
	perUser, max int

	mu     sync.Mutex
	all    int
	byUser map[string]int
}

func newCounter(perUser, max int) *counter {
	return &counter{perUser: perUser, max: max, byUser: map[string]int{}}
}

// acquire takes one place for user. ok false says which bound refused it
// (perUser true: the user's own); the caller must then hold nothing.
// Otherwise release gives the place back, once.
func (c *counter) acquire(user string) (release func(), perUser, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byUser[user] >= c.perUser {
		return nil, true, false
	}
	if c.all >= c.max {
		return nil, false, false
	}
	c.all++
	c.byUser[user]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.all--
			if c.byUser[user]--; c.byUser[user] == 0 {
				delete(c.byUser, user)
			}
		})
	}, false, true
}

// count is the number of places held overall; 0 for a nil counter.
func (c *counter) count() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.all
}

// limitPOSTs bounds the POSTs in flight, per user and overall. It runs
// behind the front door, so every POST it sees has a verified token;
// other methods end at once (GET is refused, DELETE closes a session).
func (h *Handler) limitPOSTs(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		release, perUser, ok := h.requests.acquire(userOf(r))
		if !ok {
			reason := fmt.Sprintf("the server has %d requests in progress, the most it serves at once; retry later", h.requests.max)
			limit := LimitRequests
			if perUser {
				reason = fmt.Sprintf("you already have %d requests in progress, the most one user may have; retry when one ends", h.requests.perUser)
				limit = LimitRequestsPerUser
			}
			h.onLimit(limit)
			writeTooMany(w, limitRetryAfter, "too_many_requests", reason)
			return
		}
		defer release()
		next.ServeHTTP(w, r)
	})
}
