package govern

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/resourceserver"
)

// What a caller can make a governed server hold is requests in progress:
// a POST lasts as long as its tool call, and a call needing approval waits
// up to the push timeout for a person. Each is bounded per user (issuer
// and subject) and overall:
//
//   - POSTs in flight: past MaxRequestsPerUser or MaxRequests the Gate
//     answers 429 with Retry-After before any of the body is read, so a
//     refusal costs a map lookup;
//   - calls waiting on a Duo Push: past MaxWaitingPerUser or MaxWaiting a
//     call that needs approval is refused as a tool error (by then the
//     response may be a stream whose status is sent), on record as Busy,
//     before anything is pushed. The decision reads the request and the
//     counts alone, never the data a search would match.
const (
	DefaultMaxRequestsPerUser = 16
	DefaultMaxRequests        = 512
	DefaultMaxWaitingPerUser  = 4
	DefaultMaxWaiting         = 256
)

// The bounds, as Config.OnLimit names them (stable, for a metrics label).
const (
	LimitRequestsPerUser = "requests_per_user"
	LimitRequests        = "requests"
	LimitWaitingPerUser  = "stepup_waiting_per_user"
	LimitWaiting         = "stepup_waiting"
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
// (perUser true: the user's own); the caller then holds nothing.
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

// count is the number of places held overall.
func (c *counter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.all
}

// Requests is the number of POSTs the Gate has in flight, for a gauge.
func (g *Governor) Requests() int { return g.requests.count() }

// Waiting is the number of calls waiting on a Duo Push, for a gauge.
func (g *Governor) Waiting() int { return g.waiting.count() }

// userKey names a user for the bounds: issuer and subject.
func userKey(tok *resourceserver.Token) string { return tok.Issuer + " " + tok.Subject }

// limitPOST takes a place for a POST, or answers 429 and returns false.
func (g *Governor) limitPOST(w http.ResponseWriter, tok *resourceserver.Token) (func(), bool) {
	release, perUser, ok := g.requests.acquire(userKey(tok))
	if ok {
		return release, true
	}
	reason := fmt.Sprintf("the server has %d requests in progress, the most it serves at once; retry later", g.requests.max)
	limit := LimitRequests
	if perUser {
		reason = fmt.Sprintf("you already have %d requests in progress, the most one user may have; retry when one ends", g.requests.perUser)
		limit = LimitRequestsPerUser
	}
	g.onLimit(limit)
	writeTooMany(w, limitRetryAfter, "too_many_requests", reason)
	return nil, false
}

// waitPlace takes a place among the calls waiting on a push, or refuses
// the call (on record as Busy) when the user's own, or all users', waiting
// calls are at their bound. It is decided from the counts alone, before
// anything is pushed.
func (g *Governor) waitPlace(c *Call, n *noter) (func(), error) {
	release, perUser, ok := g.waiting.acquire(userKey(c.Token))
	if ok {
		return release, nil
	}
	limit, msg := LimitWaiting, fmt.Sprintf("the server has %d calls waiting for approval, the most it holds; no push was sent. Retry in a minute.", g.waiting.max)
	if perUser {
		limit, msg = LimitWaitingPerUser, fmt.Sprintf("you already have %d calls waiting for approval on your phone, the most one user may have; no push was sent. Answer the push, or retry when those calls end.", g.waiting.perUser)
	}
	g.onLimit(limit)
	g.log.InfoContext(n.ctx, "step-up refused: too many calls waiting", "tool", n.base.Tool, "limit", limit)
	if err := n.note(Event{Kind: audit.StepUpFailed, Outcome: Busy}); err != nil {
		return nil, err
	}
	return nil, &ToolError{fmt.Sprintf("%s was not run: %s", n.base.Tool, msg)}
}

// writeTooMany answers 429 with Retry-After and an OAuth-style body.
func writeTooMany(w http.ResponseWriter, retry time.Duration, code, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(retry.Seconds())), 10))
	w.WriteHeader(http.StatusTooManyRequests)
	b, _ := json.Marshal(map[string]string{"error": code, "error_description": reason})
	w.Write(append(b, '\n'))
}
