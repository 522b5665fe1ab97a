package rstest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// User is a person who can sign in at the fake's authorization endpoint,
// with the scopes an administrator has granted them (Duo's Scope
// Authorization). Tokens issued to a user never carry a scope the user does
// not hold, and introspection drops scopes revoked since.
type User struct {
	Name   string
	Scopes []string
}

// DevUsers returns the users of the dev mode: alice holds every CRM scope,
// bob every one but crm.deals.read, carol only the read scopes.
func DevUsers() []User {
	return []User{
		{Name: "alice", Scopes: []string{"crm.contacts.read", "crm.contacts.write", "crm.deals.read", "crm.deals.write"}},
		{Name: "bob", Scopes: []string{"crm.contacts.read", "crm.contacts.write", "crm.deals.write"}},
		{Name: "carol", Scopes: []string{"crm.contacts.read", "crm.deals.read"}},
	}
}

// Errors of [AuthServer.GrantScope] and [AuthServer.RevokeScope], which the
// admin API maps to 404 and 400.
var (
	errUnknownUser      = errors.New("unknown user")
	errUnsupportedScope = errors.New("scope not supported")
)

// SetUsers replaces the users who can sign in; there are none until it is
// called. It panics if a name is empty, repeated or contains a character
// outside printable ASCII, "/" or space, or if a scope is not a valid
// scope token (RFC 6749 section 3.3). Tokens already issued to a user who is
// no longer listed introspect as inactive and cannot be refreshed.
func (a *AuthServer) SetUsers(users ...User) {
	seen := make(map[string]bool, len(users))
	copied := make([]User, len(users))
	for i, u := range users {
		if !validScopeToken(u.Name) || strings.Contains(u.Name, "/") {
			panic(fmt.Sprintf("rstest: SetUsers: invalid user name %q", u.Name))
		}
		if seen[u.Name] {
			panic(fmt.Sprintf("rstest: SetUsers: user %q listed twice", u.Name))
		}
		seen[u.Name] = true
		for _, s := range u.Scopes {
			if !validScopeToken(s) {
				panic(fmt.Sprintf("rstest: SetUsers: user %q: invalid scope %q", u.Name, s))
			}
		}
		copied[i] = User{Name: u.Name, Scopes: dedupe(u.Scopes)}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.users = copied
}

// Users returns a copy of the users, in the order given to
// [AuthServer.SetUsers], with their current scopes.
func (a *AuthServer) Users() []User {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]User, len(a.users))
	for i, u := range a.users {
		out[i] = User{Name: u.Name, Scopes: slices.Clone(u.Scopes)}
	}
	return out
}

// GrantScope grants scope to user. Tokens issued afterwards may carry it;
// tokens issued before keep the scopes they were issued with (a client
// gets the new scope by authorizing again). Granting a held scope does
// nothing. It fails if there is no such user, or if scope is not a valid
// scope token or, when scopes_supported is not empty, not listed there.
func (a *AuthServer) GrantScope(user, scope string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.userForScopeChangeLocked(user, scope)
	if err != nil {
		return err
	}
	if !slices.Contains(u.Scopes, scope) {
		u.Scopes = append(u.Scopes, scope)
	}
	return nil
}

// RevokeScope takes scope away from user. It bites at once: introspection
// of tokens already issued stops listing it, a refresh no longer grants it
// and new authorizations leave it out. A JWT verified only locally keeps
// it until it expires, as with a real authorization server. Revoking a
// scope not held does nothing. It fails as [AuthServer.GrantScope] does.
func (a *AuthServer) RevokeScope(user, scope string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.userForScopeChangeLocked(user, scope)
	if err != nil {
		return err
	}
	u.Scopes = slices.DeleteFunc(u.Scopes, func(s string) bool { return s == scope })
	return nil
}

func (a *AuthServer) userForScopeChangeLocked(user, scope string) (*User, error) {
	u := a.userLocked(user)
	if u == nil {
		return nil, fmt.Errorf("rstest: %w %q", errUnknownUser, user)
	}
	if !validScopeToken(scope) || (len(a.scopes) > 0 && !slices.Contains(a.scopes, scope)) {
		return nil, fmt.Errorf("rstest: %w: %q is not in scopes_supported %v", errUnsupportedScope, scope, a.scopes)
	}
	return u, nil
}

// userLocked returns the user named name, or nil. The pointer is valid
// until the lock is released.
func (a *AuthServer) userLocked(name string) *User {
	for i := range a.users {
		if a.users[i].Name == name {
			return &a.users[i]
		}
	}
	return nil
}

// validScopeToken reports whether s is a scope-token (RFC 6749 section
// 3.3): 1*( %x21 / %x23-5B / %x5D-7E ).
func validScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// intersect returns the elements of a that are in b, in a's order. Scopes
// match exactly: the fake knows no scope hierarchy.
func intersect(a, b []string) []string {
	out := []string{}
	for _, s := range a {
		if slices.Contains(b, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// dedupe returns a copy of ss without repeats, in first-seen order.
func dedupe(ss []string) []string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
