package pgstate

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/crm-mcp/crm-mcp/resourceserver"
)

// Refusals is govern.RefusalMemory in Postgres: the insufficient_scope
// challenges a Gate made, shared by every replica on the database, so that
// a client that signs in again and lands on another replica still gets the
// explained refusal ("ask an administrator") instead of a 403 for ever.
// It lives beside the step-up state because it is the same kind of thing
// (small, per user, expiring, shared by replicas) and so shares its
// connections, migrations and lifetime: Close the State when done.
//
// Its rules are govern's in-memory one's (govern/refusals.go), which
// TestRefusalsLikeMemory holds it to; what differs:
//   - bounds: at most 64 challenges per user (over all clients), the oldest
//     dropped first; overall, a challenge is dropped once max newer ones
//     have been remembered, so there are never more than max; expired ones
//     are deleted whenever one is remembered;
//   - Forget, which a Gate calls on every call a token holds the scopes
//     of, asks the database only about users known to have challenges.
//     Each replica learns which users those are at most forgetHint after
//     another replica challenged them (and at once for its own
//     challenges), so a Forget in that window may leave a challenge behind:
//     a later call of the same user and client lacking the scope, with a
//     newer token, then gets the explained refusal instead of the 403, which
//     is true of that token too.
//
// It is safe for concurrent use.
type Refusals struct {
	pool *pgxpool.Pool
	max  int64
	ttl  time.Duration
	now  func() time.Time

	mu         sync.Mutex
	challenged map[string]bool      // users with challenges, as of hintAt; nil until read
	hintAt     time.Time            //
	local      map[string]time.Time // users this replica challenged, and when
	refreshing bool
}

// Bounds and defaults of Refusals; the defaults are govern's.
const (
	DefaultRefusalTTL  = 10 * time.Minute
	DefaultMaxRefusals = 10_000
	maxRefusalsPerUser = 64
	// refusalClockSkew: how much earlier than the challenge the
	// authorization server's iat may say a token was issued and still
	// count as issued after it (iat has whole seconds).
	refusalClockSkew = 30 * time.Second
	// forgetHint is how stale a replica's list of challenged users may be.
	forgetHint = time.Second
)

// Refusals returns the challenges kept in s's database: at most max
// overall, each kept for ttl. Zero means the defaults.
func (s *State) Refusals(max int, ttl time.Duration) *Refusals {
	if max <= 0 {
		max = DefaultMaxRefusals
	}
	if ttl <= 0 {
		ttl = DefaultRefusalTTL
	}
	return &Refusals{pool: s.pool, max: int64(max), ttl: ttl, now: time.Now, local: map[string]time.Time{}}
}

// refusalUser keys a user over all its clients.
func refusalUser(tok *resourceserver.Token) string { return tok.Issuer + " " + tok.Subject }

// iatOf is the token's iat in Unix seconds, 0 when it has none.
func iatOf(tok *resourceserver.Token) int64 {
	if f, ok := tok.Claims["iat"].(float64); ok && f > 0 {
		return int64(f)
	}
	return 0
}

// lockUser serializes one user's challenges across replicas, as update
// does for the step-up state.
func lockUser(ctx context.Context, tx pgx.Tx, user string) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('govern refusal ' || $1, 0))`, user)
	return err
}

// Remember records that tok was challenged for scopes just now.
func (r *Refusals) Remember(ctx context.Context, tok *resourceserver.Token, scopes []string) error {
	if len(scopes) == 0 {
		return nil
	}
	now := r.now()
	user := refusalUser(tok)
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if err := lockUser(ctx, tx, user); err != nil {
			return err
		}
		for _, scope := range scopes {
			// A new challenge of the same scope replaces the old one and
			// becomes the newest (a fresh seq).
			if _, err := tx.Exec(ctx, `INSERT INTO govern_refusals
				(username, client_id, scope, challenged_at, token_iat, token_jti, expires_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (username, client_id, scope) DO UPDATE SET
					seq = nextval('govern_refusals_seq'), challenged_at = excluded.challenged_at,
					token_iat = excluded.token_iat, token_jti = excluded.token_jti, expires_at = excluded.expires_at`,
				user, tok.ClientID, scope, now, iatOf(tok), tok.JTI, now.Add(r.ttl)); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `DELETE FROM govern_refusals WHERE ctid IN (
			SELECT ctid FROM govern_refusals WHERE username = $1 ORDER BY seq DESC OFFSET $2)`, user, maxRefusalsPerUser)
		return err
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	if r.challenged != nil {
		r.challenged[user] = true
	}
	r.local[user] = r.now()
	r.mu.Unlock()
	// Outside the user's lock: both deletes touch only rows that are no
	// longer wanted, whoever runs them. Sequence numbers are never reused,
	// so at most max rows have one above max(seq)-max.
	if _, err := r.pool.Exec(ctx, `DELETE FROM govern_refusals
		WHERE seq <= (SELECT max(seq) FROM govern_refusals) - $1 OR expires_at <= $2`, r.max, now); err != nil {
		return err
	}
	return nil
}

// Forget drops the challenges of scopes that tok now holds.
func (r *Refusals) Forget(ctx context.Context, tok *resourceserver.Token, scopes []string) error {
	if len(scopes) == 0 {
		return nil
	}
	user := refusalUser(tok)
	may, err := r.mayHave(ctx, user)
	if err != nil || !may {
		return err
	}
	_, err = r.pool.Exec(ctx, `DELETE FROM govern_refusals WHERE username = $1 AND client_id = $2 AND scope = ANY($3)`,
		user, tok.ClientID, scopes)
	return err
}

// mayHave reports whether user may have challenges, from a list of the
// challenged users refreshed at most every forgetHint. While one caller
// refreshes it, the others read the list as it was.
func (r *Refusals) mayHave(ctx context.Context, user string) (bool, error) {
	r.mu.Lock()
	if r.refreshing || (r.challenged != nil && r.now().Sub(r.hintAt) < forgetHint) {
		may := r.challenged == nil || r.challenged[user] // nil: never read yet, so ask
		r.mu.Unlock()
		return may, nil
	}
	r.refreshing = true
	r.mu.Unlock()

	at := r.now()
	users := map[string]bool{}
	rows, err := r.pool.Query(ctx, `SELECT DISTINCT username FROM govern_refusals WHERE expires_at > $1`, at)
	if err == nil {
		var u string
		_, err = pgx.ForEachRow(rows, []any{&u}, func() error {
			users[u] = true
			return nil
		})
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.refreshing = false
	if err != nil {
		return true, err
	}
	// A challenge this replica made while the list was read may be missing
	// from it: keep those users. Older local entries are in the list.
	for u, t := range r.local {
		if t.Before(at.Add(-forgetHint)) {
			delete(r.local, u)
		} else {
			users[u] = true
		}
	}
	r.challenged, r.hintAt = users, at
	return users[user], nil
}

// Explain reports whether a call of tok lacking the scopes is to be
// answered with the explained refusal; if so, the challenges are answered
// and forgotten.
func (r *Refusals) Explain(ctx context.Context, tok *resourceserver.Token, lacking []string) (bool, error) {
	iat := iatOf(tok)
	if iat == 0 || len(lacking) == 0 {
		return false, nil // nothing says when it was issued
	}
	now := r.now()
	user := refusalUser(tok)
	explain := false
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if err := lockUser(ctx, tx, user); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT scope, challenged_at, token_iat, token_jti, expires_at FROM govern_refusals
			WHERE username = $1 AND client_id = $2 AND scope = ANY($3)`, user, tok.ClientID, lacking)
		if err != nil {
			return err
		}
		found := map[string]bool{}
		var scope, jti string
		var at, expires time.Time
		var challengedIAT int64
		ok := true
		if _, err := pgx.ForEachRow(rows, []any{&scope, &at, &challengedIAT, &jti, &expires}, func() error {
			found[scope] = true
			sameToken := jti == tok.JTI
			if jti == "" && tok.JTI == "" {
				sameToken = challengedIAT == iat
			}
			issued := time.Unix(iat, 0)
			if !now.Before(expires) || sameToken || iat < challengedIAT || issued.Before(at.Add(-refusalClockSkew)) {
				ok = false
			}
			return nil
		}); err != nil {
			return err
		}
		for _, s := range lacking {
			ok = ok && found[s]
		}
		if !ok {
			return nil
		}
		explain = true
		_, err = tx.Exec(ctx, `DELETE FROM govern_refusals WHERE username = $1 AND client_id = $2 AND scope = ANY($3)`,
			user, tok.ClientID, lacking)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("pgstate: refusals: %w", err)
	}
	return explain, nil
}
