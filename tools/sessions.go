package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Every initialize creates a Streamable HTTP session (some 15 KB, and a
// few goroutines) that go-sdk keeps until the client deletes it, which
// many clients never do. So sessions are bounded three ways:
//
//   - idle: a session with no request for SessionIdleTimeout is closed
//     (go-sdk's SessionTimeout; an open GET stream does not count);
//   - per user: a user (issuer and subject, as go-sdk's TokenInfo.UserID)
//     at MaxSessionsPerUser who initializes again loses their least
//     recently used session that has no request in progress. Those are
//     the sessions a restarted client left behind, and only that user's
//     own are touched. If every one has a request in progress, the
//     initialize gets 429;
//   - overall: past MaxSessions an initialize gets 429 with Retry-After,
//     saying when the oldest idle session will have timed out. No user's
//     session is closed to make room for another user's.
//
// A client whose session was closed gets 404 on it and, as the transport
// spec asks, initializes a new one.
const (
	DefaultSessionIdleTimeout = 30 * time.Minute
	DefaultMaxSessionsPerUser = 10
	DefaultMaxSessions        = 1000
)

// busyRetryAfter is the Retry-After of a 429 for a user whose sessions all
// have a request in progress: most such requests wait on a Duo Push.
const busyRetryAfter = 10 * time.Second

// sessionLimits tracks the live sessions of the Streamable HTTP handler it
// wraps and enforces the bounds above. It is safe for concurrent use.
type sessionLimits struct {
	idle    time.Duration
	perUser int
	max     int
	log     *slog.Logger
	now     func() time.Time
	next    http.Handler

	mu      sync.Mutex
	byID    map[string]*liveSession
	byUser  map[string][]*liveSession
	pending map[string]int // initializes in progress, by user
	pendAll int
}

type liveSession struct {
	ss       *mcp.ServerSession
	user     string
	lastUsed time.Time
	busy     int // POSTs in progress
}

func newSessionLimits(idle time.Duration, perUser, max int, log *slog.Logger, next http.Handler) *sessionLimits {
	return &sessionLimits{
		idle: idle, perUser: perUser, max: max, log: log, now: time.Now, next: next,
		byID: map[string]*liveSession{}, byUser: map[string][]*liveSession{}, pending: map[string]int{},
	}
}

func (l *sessionLimits) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if id := r.Header.Get("Mcp-Session-Id"); id != "" {
		done := l.use(id, userOf(r), r.Method == http.MethodPost)
		defer done()
		l.next.ServeHTTP(w, r)
		return
	}
	if r.Method != http.MethodPost || !initializes(r) {
		l.next.ServeHTTP(w, r)
		return
	}
	// An initialize without a session creates one: hold a place for it
	// first. (go-sdk closes the session of any other POST at its end.)
	user := userOf(r)
	victim, retry, reason := l.reserve(user)
	if reason != "" {
		writeTooMany(w, retry, "too_many_sessions", reason)
		return
	}
	res := &reservation{user: user}
	defer l.release(res)
	if victim != nil {
		l.log.InfoContext(r.Context(), "closed the least recently used idle MCP session of a user at the per-user limit",
			"user", user, "limit", l.perUser, "idle_for", l.now().Sub(victim.lastUsed).Round(time.Second).String())
		victim.ss.Close()
	}
	// go-sdk runs the session on a context derived from this request's, so
	// track finds the reservation and turns it into the session at once:
	// the client may open its next session before this POST has returned.
	l.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), reservationKey{}, res)))
}

// reservation is the place held for the session a POST may create.
type reservation struct {
	user string
	done bool // released, or become a session; guarded by sessionLimits.mu
}

type reservationKey struct{}

// initializes reports whether a POST body holds an initialize request. The
// gate has read the body before, and refused it unless go-sdk reads it
// alike (body.go).
func initializes(r *http.Request) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return true // go-sdk refuses it; count it meanwhile
	}
	raws := []json.RawMessage{body}
	if b := bytes.TrimLeft(body, " \t\r\n"); len(b) > 0 && b[0] == '[' {
		if json.Unmarshal(body, &raws) != nil {
			return true // go-sdk refuses it; count it meanwhile
		}
	}
	for _, raw := range raws {
		if method, _, ok := readRequest(raw); ok && method == "initialize" {
			return true
		}
	}
	return false
}

func userOf(r *http.Request) string {
	if ti := auth.TokenInfoFromContext(r.Context()); ti != nil {
		return ti.UserID
	}
	return ""
}

// use marks a request to session id; the returned function marks its end.
// Only the session's own user counts: go-sdk refuses anyone else.
func (l *sessionLimits) use(id, user string, post bool) func() {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.byID[id]
	if s == nil || s.user != user {
		return func() {}
	}
	s.lastUsed = l.now()
	if !post {
		return func() {}
	}
	s.busy++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		s.busy--
		s.lastUsed = l.now()
	}
}

// reserve holds a place for a new session of user. At the per-user bound
// it takes that user's least recently used idle session out of the count
// and returns it, for the caller to close. When no place can be had it
// returns the reason and when to retry.
func (l *sessionLimits) reserve(user string) (victim *liveSession, retry time.Duration, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.byUser[user])+l.pending[user] >= l.perUser {
		for _, s := range l.byUser[user] {
			if s.busy == 0 && (victim == nil || s.lastUsed.Before(victim.lastUsed)) {
				victim = s
			}
		}
		if victim == nil {
			return nil, busyRetryAfter, fmt.Sprintf("you already have %d MCP sessions, the most one user may have, and each has a request in progress; retry when one ends, or end a session (HTTP DELETE)", l.perUser)
		}
		l.removeLocked(victim.ss.ID())
	}
	if len(l.byID)+l.pendAll >= l.max {
		if victim != nil { // give it back: nothing is created
			l.addLocked(victim)
		}
		return nil, l.retryLocked(), fmt.Sprintf("the server holds %d MCP sessions, the most it keeps; retry later", l.max)
	}
	l.pending[user]++
	l.pendAll++
	return victim, 0, ""
}

// release gives back the place held by res, unless it already became a
// session. Call it with l.mu held, or through release.
func (l *sessionLimits) releaseLocked(res *reservation) {
	if res.done {
		return
	}
	res.done = true
	l.pendAll--
	if l.pending[res.user]--; l.pending[res.user] == 0 {
		delete(l.pending, res.user)
	}
}

func (l *sessionLimits) release(res *reservation) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releaseLocked(res)
}

// retryLocked is how long until the least recently used idle session
// times out; at least a second.
func (l *sessionLimits) retryLocked() time.Duration {
	soonest := time.Duration(math.MaxInt64)
	now := l.now()
	for _, s := range l.byID {
		if d := s.lastUsed.Add(l.idle).Sub(now); s.busy == 0 && d < soonest {
			soonest = d
		}
	}
	if soonest == math.MaxInt64 {
		soonest = busyRetryAfter
	}
	return max(soonest, time.Second)
}

// track is a receiving middleware: each session that initializes is
// counted until it closes.
func (l *sessionLimits) track(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		if method != "initialize" || err != nil {
			return res, err
		}
		ss, ok := req.GetSession().(*mcp.ServerSession)
		if !ok || ss.ID() == "" {
			return res, err
		}
		var user string
		if extra := req.GetExtra(); extra != nil && extra.TokenInfo != nil {
			user = extra.TokenInfo.UserID
		}
		l.mu.Lock()
		_, known := l.byID[ss.ID()]
		if !known {
			l.addLocked(&liveSession{ss: ss, user: user, lastUsed: l.now()})
			if res, ok := ctx.Value(reservationKey{}).(*reservation); ok {
				l.releaseLocked(res)
			}
		}
		l.mu.Unlock()
		if !known {
			go func() {
				ss.Wait() // closed: idle, deleted, evicted or shut down
				l.mu.Lock()
				defer l.mu.Unlock()
				if s := l.byID[ss.ID()]; s != nil && s.ss == ss {
					l.removeLocked(ss.ID())
				}
			}()
		}
		return res, err
	}
}

func (l *sessionLimits) addLocked(s *liveSession) {
	l.byID[s.ss.ID()] = s
	l.byUser[s.user] = append(l.byUser[s.user], s)
}

func (l *sessionLimits) removeLocked(id string) {
	s := l.byID[id]
	if s == nil {
		return
	}
	delete(l.byID, id)
	list := l.byUser[s.user]
	for i, x := range list {
		if x == s {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(l.byUser, s.user)
	} else {
		l.byUser[s.user] = list
	}
}

// count returns the sessions tracked, overall and for user.
func (l *sessionLimits) count(user string) (all, ofUser int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byID), len(l.byUser[user])
}

// writeTooMany answers 429 (RFC 6585) with Retry-After in whole seconds
// and a JSON error code and reason.
func writeTooMany(w http.ResponseWriter, retry time.Duration, code, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(retry.Seconds())), 10))
	w.WriteHeader(http.StatusTooManyRequests)
	b, _ := json.Marshal(map[string]string{"error": code, "error_description": reason})
	w.Write(append(b, '\n'))
}
