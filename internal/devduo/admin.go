package devduo

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// The scope admin page and its JSON API stand in for Duo's Scope
// Authorization. They have no authentication: anyone who can reach the
// sign-in can grant any user any scope. The dev mode binds to loopback, and
// cross-origin posts from browsers are refused (si.csrf), but that is all.

type adminPage struct {
	Action, API string
	Users       []User
	Scopes      []string
	Rows        []adminRow
}

type adminRow struct {
	Name  string
	Cells []adminCell
}

type adminCell struct {
	User, Scope string
	Held        bool
}

// serveAdminPage serves the users × scopes table (GET) and applies its
// grant and revoke buttons (POST user, scope, action=grant|revoke), then
// shows the table again (303, so that a reload does not repost).
func (si *SignIn) serveAdminPage(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			si.errorPage(w, r, http.StatusBadRequest, "invalid_request", "The form could not be read.")
			return
		}
		user, scope := r.PostForm.Get("user"), r.PostForm.Get("scope")
		var err error
		switch r.PostForm.Get("action") {
		case "grant":
			err = si.grantScope(user, scope)
		case "revoke":
			err = si.revokeScope(user, scope)
		default:
			si.errorPage(w, r, http.StatusBadRequest, "invalid_request", "The action must be grant or revoke.")
			return
		}
		if err != nil {
			si.errorPage(w, r, adminStatus(err), "invalid_request", err.Error())
			return
		}
		http.Redirect(w, r, si.path+"/admin", http.StatusSeeOther)
		return
	default:
		w.Header().Set("Allow", "GET, POST")
		si.errorPage(w, r, http.StatusMethodNotAllowed, "invalid_request", "Use GET, or POST the page's forms.")
		return
	}

	si.mu.Lock()
	columns := slices.Clone(si.scopes)
	for _, u := range si.users {
		for _, s := range u.Scopes {
			if !slices.Contains(columns, s) {
				columns = append(columns, s)
			}
		}
	}
	page := adminPage{Action: si.path + "/admin", API: si.path + "/admin/api/users", Scopes: columns}
	for _, u := range si.users {
		page.Users = append(page.Users, User{Name: u.Name})
		row := adminRow{Name: u.Name}
		for _, s := range columns {
			row.Cells = append(row.Cells, adminCell{User: u.Name, Scope: s, Held: slices.Contains(u.Scopes, s)})
		}
		page.Rows = append(page.Rows, row)
	}
	si.mu.Unlock()
	si.renderPage(w, http.StatusOK, "admin.html", page)
}

// serveAdminAPI serves
//
//	GET    P/admin/api/users                         [{"name":..., "scopes":[...]}]
//	POST   P/admin/api/users/{user}/scopes/{scope}   grant, 204
//	DELETE P/admin/api/users/{user}/scopes/{scope}   revoke, 204
//
// An unknown user is 404, a scope outside scopes_supported 400.
func (si *SignIn) serveAdminAPI(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.EscapedPath(), escapedPath(si.path)+"/admin/api/")
	parts := strings.Split(rest, "/")
	for i, p := range parts {
		var err error
		if parts[i], err = url.PathUnescape(p); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request", "error_description": "malformed path"})
			return
		}
	}
	switch {
	case len(parts) == 1 && parts[0] == "users":
		if !allowMethod(w, r, http.MethodGet) {
			return
		}
		type apiUser struct {
			Name   string   `json:"name"`
			Scopes []string `json:"scopes"`
		}
		users := si.Users()
		out := make([]apiUser, len(users))
		for i, u := range users {
			out[i] = apiUser{Name: u.Name, Scopes: u.Scopes}
			if out[i].Scopes == nil {
				out[i].Scopes = []string{}
			}
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, out)
	case len(parts) == 4 && parts[0] == "users" && parts[2] == "scopes":
		var err error
		switch r.Method {
		case http.MethodPost:
			err = si.grantScope(parts[1], parts[3])
		case http.MethodDelete:
			err = si.revokeScope(parts[1], parts[3])
		default:
			w.Header().Set("Allow", "POST, DELETE")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "invalid_request"})
			return
		}
		if err != nil {
			code := "invalid_scope"
			if errors.Is(err, errUnknownUser) {
				code = "not_found"
			}
			writeJSON(w, adminStatus(err), map[string]any{"error": code, "error_description": err.Error()})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// adminStatus maps the errors of grantScope and revokeScope to a status.
func adminStatus(err error) int {
	if errors.Is(err, errUnknownUser) {
		return http.StatusNotFound
	}
	return http.StatusBadRequest
}

// escapedPath is p as it appears in a request's escaped path.
func escapedPath(p string) string {
	return (&url.URL{Path: p}).EscapedPath()
}
