package tools

import (
	"container/list"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/resourceserver"
)

// A 403 insufficient_scope challenge asks the client to sign in again
// with more scopes (MCP authorization spec, scope challenge handling).
// When the identity provider will not grant them, the new token lacks the
// scope too, a second 403 follows, and the client shows its user a
// generic failure ("retry limit reached") that never names the scope.
//
// So the gate remembers, for each user and client (client_id), the scopes
// it challenged and the token it challenged. A later call lacking such a
// scope, made with another token issued after the challenge, shows that
// signing in again (or refreshing) did not bring the scope: it gets a tool
// error that names the scope and says to ask an administrator
// (explainRefusal), which clients show their user. That answers the
// challenge: it is forgotten, and the next refusal is the spec's 403
// again, so the client re-authorizes and gets the scope once it is
// granted. Anything else gets the 403 too: the challenged token itself, a
// token without iat, another client, and any token once the memory has
// lapsed (refusalTTL) or the scope has been seen granted to that user and
// client.
const (
	// refusalTTL is how long a challenge is remembered.
	refusalTTL = 10 * time.Minute
	// maxRefusals bounds the memory: entries (user, client, scope) beyond
	// it push out the oldest.
	maxRefusals = 10_000
	// refusalClockSkew is how much earlier than the challenge, by this
	// server's clock, the authorization server's iat may say a token was
	// issued and still count as issued after it. iat has whole seconds.
	refusalClockSkew = 30 * time.Second
)

// refusals is the memory of insufficient_scope challenges. It is safe for
// concurrent use.
type refusals struct {
	now func() time.Time

	mu    sync.Mutex
	byKey map[refusalKey]*list.Element // of *refusal
	byAge *list.List                   // oldest challenge first
	max   int
	ttl   time.Duration
	skew  time.Duration
}

// refusalKey is one scope challenged to one client of one user (issuer and
// subject, as go-sdk's TokenInfo.UserID).
type refusalKey struct {
	user, client, scope string
}

type refusal struct {
	key        refusalKey
	at         time.Time // when the 403 was sent
	challenged tokenID
}

// tokenID tells tokens apart: by jti when either has one, else by iat.
type tokenID struct {
	iat time.Time // zero if the token had none
	jti string
}

func (a tokenID) same(b tokenID) bool {
	if a.jti != "" || b.jti != "" {
		return a.jti == b.jti
	}
	return a.iat.Equal(b.iat)
}

func newRefusals(now func() time.Time) *refusals {
	if now == nil {
		now = time.Now
	}
	return &refusals{now: now, byKey: map[refusalKey]*list.Element{}, byAge: list.New(), max: maxRefusals, ttl: refusalTTL, skew: refusalClockSkew}
}

func keyOf(tok *resourceserver.Token, scope string) refusalKey {
	return refusalKey{user: tok.Issuer + " " + tok.Subject, client: tok.ClientID, scope: scope}
}

// idOf reads the token's jti and iat claim (a number of seconds).
func idOf(tok *resourceserver.Token) tokenID {
	id := tokenID{jti: tok.JTI}
	if f, ok := tok.Claims["iat"].(float64); ok && f > 0 {
		id.iat = time.Unix(int64(f), 0)
	}
	return id
}

// remember records that tok was challenged for scopes just now.
func (m *refusals) remember(tok *resourceserver.Token, scopes []string) {
	now := m.now()
	id := idOf(tok)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range scopes {
		k := keyOf(tok, s)
		if e := m.byKey[k]; e != nil {
			m.byAge.Remove(e)
		}
		m.byKey[k] = m.byAge.PushBack(&refusal{key: k, at: now, challenged: id})
	}
	// Drop what has lapsed, then the oldest beyond the bound.
	for e := m.byAge.Front(); e != nil && (m.byAge.Len() > m.max || now.Sub(e.Value.(*refusal).at) >= m.ttl); e = m.byAge.Front() {
		m.byAge.Remove(e)
		delete(m.byKey, e.Value.(*refusal).key)
	}
}

// forget drops the challenges of scopes that tok holds: the next refusal
// of such a scope (revoked again, say) starts with a 403.
func (m *refusals) forget(tok *resourceserver.Token, scopes []string) {
	if len(scopes) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.byKey) == 0 {
		return
	}
	for _, s := range scopes {
		k := keyOf(tok, s)
		if e := m.byKey[k]; e != nil {
			m.byAge.Remove(e)
			delete(m.byKey, k)
		}
	}
}

// explain reports whether a call lacking the scopes in lacking is to be
// answered with a tool error rather than a 403 (see the rules above): every
// one was challenged to this user and client within the TTL, with another
// token, and tok was issued after that challenge. If so, the challenges
// are answered and forgotten. A token without iat never qualifies:
// nothing says when it was issued.
func (m *refusals) explain(tok *resourceserver.Token, lacking []string) bool {
	id := idOf(tok)
	if id.iat.IsZero() {
		return false
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var answered []*list.Element
	for _, s := range lacking {
		e := m.byKey[keyOf(tok, s)]
		if e == nil {
			return false
		}
		r := e.Value.(*refusal)
		if now.Sub(r.at) >= m.ttl || id.same(r.challenged) ||
			id.iat.Before(r.challenged.iat) || id.iat.Before(r.at.Add(-m.skew)) {
			return false
		}
		answered = append(answered, e)
	}
	for _, e := range answered {
		m.byAge.Remove(e)
		delete(m.byKey, e.Value.(*refusal).key)
	}
	return true
}

// explainRefusal answers a tools/call that the gate let through marked
// with explainHeader, and whose token lacks the tool's scopes, with a tool
// error saying that signing in again cannot help.
func (c *catalog) explainRefusal(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		call, ok := req.(*mcp.CallToolRequest)
		if method != "tools/call" || !ok || call.Params == nil || call.Extra == nil || call.Extra.Header.Get(explainHeader) == "" {
			return next(ctx, method, req)
		}
		sp := c.byName[call.Params.Name]
		if sp == nil {
			return next(ctx, method, req)
		}
		lacking := missing(grantedScopes(ctx, req), sp.scopes)
		if len(lacking) == 0 {
			return next(ctx, method, req)
		}
		if tok := caller(call); tok != nil && c.d.record != nil {
			// A refusal like the 403 it stands for: on record, though the
			// call is refused whatever the record says.
			c.d.note(ctx, newEvent(sp.name, tok, call.Params.Arguments), audit.Event{Kind: audit.ScopeDenied,
				Reason: "insufficient_scope, explained: signed in again without " + strings.Join(lacking, " ")})
		}
		return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: refusalText(sp.name, lacking)}}}, nil
	}
}

// refusalText is what the user reads: the scope, why signing in again did
// not help, and what to do.
func refusalText(tool string, lacking []string) string {
	scopes := strings.Join(lacking, " and ")
	noun := "scope"
	if len(lacking) > 1 {
		noun = "scopes"
	}
	return fmt.Sprintf("%s needs the %s %s, which the identity provider has not granted to you: "+
		"a new access token, issued after this server asked for it, still lacks it. "+
		"Ask an administrator to grant you %s, then sign in again.", tool, noun, scopes, scopes)
}
