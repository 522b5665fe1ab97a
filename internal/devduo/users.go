package devduo

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// User is a person who can sign in at the authorization endpoint,
// with the scopes an administrator has granted them (Duo's Scope
// Authorization). Tokens issued to a user never carry a scope the user does
// not hold, and introspection drops scopes revoked since.
type User struct {
	Name   string
	Scopes []string
}

// DefaultUsers returns the users of crm-mcp dev: alice holds every CRM
// scope, bob every one but crm.deals.read, carol only the read scopes.
func DefaultUsers() []User {
	return []User{
		{Name: "alice", Scopes: []string{"crm.contacts.read", "crm.contacts.write", "crm.deals.read", "crm.deals.write"}},
		{Name: "bob", Scopes: []string{"crm.contacts.read", "crm.contacts.write", "crm.deals.write"}},
		{Name: "carol", Scopes: []string{"crm.contacts.read", "crm.deals.read"}},
	}
}

// Errors of grantScope and revokeScope, which the admin API maps to 404 and
// 400.
var (
	errUnknownUser      = errors.New("unknown user")
	errUnsupportedScope = errors.New("scope not supported")
)

// SetUsers replaces the users who can sign in; there are none until it is
// called. It panics if a name is empty, repeated or contains a character
// outside printable ASCII, "/" or space, or if a scope is not a valid
// scope token (RFC 6749 section 3.3). Tokens already issued to a user who is
// no longer listed introspect as inactive and cannot be refreshed. The
// scopes the users hold, in first-seen order, become scopes_supported: the
// columns of the admin page and what it may grant.
func (si *SignIn) SetUsers(users ...User) {
	seen := make(map[string]bool, len(users))
	copied := make([]User, len(users))
	for i, u := range users {
		if !validScopeToken(u.Name) || strings.Contains(u.Name, "/") {
			panic(fmt.Sprintf("devduo: SetUsers: invalid user name %q", u.Name))
		}
		if seen[u.Name] {
			panic(fmt.Sprintf("devduo: SetUsers: user %q listed twice", u.Name))
		}
		seen[u.Name] = true
		for _, s := range u.Scopes {
			if !validScopeToken(s) {
				panic(fmt.Sprintf("devduo: SetUsers: user %q: invalid scope %q", u.Name, s))
			}
		}
		copied[i] = User{Name: u.Name, Scopes: dedupe(u.Scopes)}
	}
	var scopes []string
	for _, u := range copied {
		scopes = append(scopes, u.Scopes...)
	}
	scopes = dedupe(scopes)
	var supported any = scopes
	if len(scopes) == 0 {
		supported = nil // no field rather than an empty list
	}
	si.as.SetMetadata(map[string]any{"scopes_supported": supported})
	si.mu.Lock()
	defer si.mu.Unlock()
	si.users = copied
	si.scopes = scopes
}

// Users returns a copy of the users, in the order given to
// [SignIn.SetUsers], with their current scopes.
func (si *SignIn) Users() []User {
	si.mu.Lock()
	defer si.mu.Unlock()
	out := make([]User, len(si.users))
	for i, u := range si.users {
		out[i] = User{Name: u.Name, Scopes: slices.Clone(u.Scopes)}
	}
	return out
}

// grantScope grants scope to user (the admin page's grant). Tokens issued afterwards may carry it;
// tokens issued before keep the scopes they were issued with (a client
// gets the new scope by authorizing again). Granting a held scope does
// nothing. It fails if there is no such user, or if scope is not a valid
// scope token or not listed in scopes_supported.
func (si *SignIn) grantScope(user, scope string) error {
	si.mu.Lock()
	defer si.mu.Unlock()
	u, err := si.userForScopeChangeLocked(user, scope)
	if err != nil {
		return err
	}
	if !slices.Contains(u.Scopes, scope) {
		u.Scopes = append(u.Scopes, scope)
	}
	return nil
}

// revokeScope takes scope away from user (the admin page's revoke). It bites at once: introspection
// of tokens already issued stops listing it, a refresh no longer grants it
// and new authorizations leave it out. A JWT verified only locally keeps
// it until it expires, as with a real authorization server. Revoking a
// scope not held does nothing. It fails as grantScope does.
func (si *SignIn) revokeScope(user, scope string) error {
	si.mu.Lock()
	defer si.mu.Unlock()
	u, err := si.userForScopeChangeLocked(user, scope)
	if err != nil {
		return err
	}
	u.Scopes = slices.DeleteFunc(u.Scopes, func(s string) bool { return s == scope })
	return nil
}

func (si *SignIn) userForScopeChangeLocked(user, scope string) (*User, error) {
	u := si.userLocked(user)
	if u == nil {
		return nil, fmt.Errorf("devduo: %w %q", errUnknownUser, user)
	}
	if !validScopeToken(scope) || !slices.Contains(si.scopes, scope) {
		return nil, fmt.Errorf("devduo: %w: %q is not in scopes_supported %v", errUnsupportedScope, scope, si.scopes)
	}
	return u, nil
}

// userLocked returns the user named name, or nil. The pointer is valid
// until the lock is released.
func (si *SignIn) userLocked(name string) *User {
	for i := range si.users {
		if si.users[i].Name == name {
			return &si.users[i]
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
// match exactly: the sign-in knows no scope hierarchy.
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
