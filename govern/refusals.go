package govern

import (
	"container/list"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/crm-mcp/crm-mcp/resourceserver"
)

// A 403 insufficient_scope challenge asks the client to sign in again with
// more scopes. When the identity provider will not grant them, the new
// token lacks the scope too, a second 403 follows, and the client shows a
// generic failure that never names the scope. So the Gate remembers, per
// user and client, the scopes it challenged and the token it challenged.
// A later call lacking such a scope, made with another token issued after
// the challenge, shows that signing in again did not help: it gets a tool
// error naming the scope and saying to ask an administrator, and the
// challenge is forgotten, so that the next refusal is the spec's 403 again.
// Everything else gets the 403: the challenged token itself, a token
// without iat, another client, and any token once the memory has lapsed.

// RefusalMemory is where the Gate keeps its challenges. Replicas behind
// one load balancer must share one (a database), or a client that signs in
// again may land on a replica that never challenged it and get a 403
// forever. An error means "no": the client gets the standard 403.
type RefusalMemory interface {
	// Remember records that tok was challenged for scopes just now.
	Remember(ctx context.Context, tok *resourceserver.Token, scopes []string) error
	// Forget drops the challenges of scopes that tok now holds.
	Forget(ctx context.Context, tok *resourceserver.Token, scopes []string) error
	// Explain reports whether a call of tok lacking the scopes is to be
	// answered with the explained refusal; if so, the challenges are
	// answered and forgotten.
	Explain(ctx context.Context, tok *resourceserver.Token, lacking []string) (bool, error)
}

// Defaults of NewRefusalMemory.
const (
	DefaultRefusalTTL  = 10 * time.Minute
	DefaultMaxRefusals = 10_000
	// maxRefusalsPerUser bounds what one user (over all clients) holds.
	maxRefusalsPerUser = 64
	// refusalClockSkew: how much earlier than the challenge the
	// authorization server's iat may say a token was issued and still
	// count as issued after it. iat has whole seconds.
	refusalClockSkew = 30 * time.Second
)

// NewRefusalMemory returns a RefusalMemory in this process's memory,
// bounded to max challenges overall (oldest dropped first), 64 per user,
// each kept for ttl. Zero means the defaults.
func NewRefusalMemory(max int, ttl time.Duration) RefusalMemory {
	if max <= 0 {
		max = DefaultMaxRefusals
	}
	if ttl <= 0 {
		ttl = DefaultRefusalTTL
	}
	return &memRefusals{now: time.Now, byKey: map[refusalKey]*list.Element{}, byAge: list.New(), perUser: map[string]int{}, max: max, ttl: ttl}
}

type memRefusals struct {
	now func() time.Time

	mu      sync.Mutex
	byKey   map[refusalKey]*list.Element // of *refusal
	byAge   *list.List                   // oldest first
	perUser map[string]int
	max     int
	ttl     time.Duration
}

type refusalKey struct{ user, client, scope string }

type refusal struct {
	key        refusalKey
	at         time.Time
	challenged tokenID
}

// tokenID tells tokens apart: by jti when either has one, else by iat.
type tokenID struct {
	iat time.Time
	jti string
}

func (a tokenID) same(b tokenID) bool {
	if a.jti != "" || b.jti != "" {
		return a.jti == b.jti
	}
	return a.iat.Equal(b.iat)
}

func keyOf(tok *resourceserver.Token, scope string) refusalKey {
	return refusalKey{user: tok.Issuer + " " + tok.Subject, client: tok.ClientID, scope: scope}
}

func idOf(tok *resourceserver.Token) tokenID {
	id := tokenID{jti: tok.JTI}
	if f, ok := tok.Claims["iat"].(float64); ok && f > 0 {
		id.iat = time.Unix(int64(f), 0)
	}
	return id
}

func (m *memRefusals) drop(e *list.Element) {
	r := e.Value.(*refusal)
	m.byAge.Remove(e)
	delete(m.byKey, r.key)
	if m.perUser[r.key.user]--; m.perUser[r.key.user] <= 0 {
		delete(m.perUser, r.key.user)
	}
}

func (m *memRefusals) Remember(_ context.Context, tok *resourceserver.Token, scopes []string) error {
	now := m.now()
	id := idOf(tok)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range scopes {
		k := keyOf(tok, s)
		if e := m.byKey[k]; e != nil {
			m.drop(e)
		}
		if m.perUser[k.user] >= maxRefusalsPerUser {
			for e := m.byAge.Front(); e != nil; e = e.Next() {
				if e.Value.(*refusal).key.user == k.user {
					m.drop(e)
					break
				}
			}
		}
		m.byKey[k] = m.byAge.PushBack(&refusal{key: k, at: now, challenged: id})
		m.perUser[k.user]++
	}
	for e := m.byAge.Front(); e != nil && (m.byAge.Len() > m.max || now.Sub(e.Value.(*refusal).at) >= m.ttl); e = m.byAge.Front() {
		m.drop(e)
	}
	return nil
}

func (m *memRefusals) Forget(_ context.Context, tok *resourceserver.Token, scopes []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.byKey) == 0 {
		return nil
	}
	for _, s := range scopes {
		if e := m.byKey[keyOf(tok, s)]; e != nil {
			m.drop(e)
		}
	}
	return nil
}

func (m *memRefusals) Explain(_ context.Context, tok *resourceserver.Token, lacking []string) (bool, error) {
	id := idOf(tok)
	if id.iat.IsZero() {
		return false, nil // nothing says when it was issued
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var answered []*list.Element
	for _, s := range lacking {
		e := m.byKey[keyOf(tok, s)]
		if e == nil {
			return false, nil
		}
		r := e.Value.(*refusal)
		if now.Sub(r.at) >= m.ttl || id.same(r.challenged) ||
			id.iat.Before(r.challenged.iat) || id.iat.Before(r.at.Add(-refusalClockSkew)) {
			return false, nil
		}
		answered = append(answered, e)
	}
	for _, e := range answered {
		m.drop(e)
	}
	return true, nil
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
