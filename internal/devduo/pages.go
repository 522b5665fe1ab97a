package devduo

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"slices"
	"strings"
)

//go:embed templates/*.html
var templateFS embed.FS

// pages are the HTML pages; html/template escapes everything put into them.
var pages = template.Must(template.ParseFS(templateFS, "templates/*.html"))

type loginPage struct {
	Action, Pending, Client, ClientID string
	Resources, Requested              []string
	Users                             []User
	Host                              string // of a client_id URL; "" for registered clients
}

type consentPage struct {
	Action, Pending, Client, ClientID, RedirectURI, User string
	Resources, Requested, Granted, Withheld              []string
	Host                                                 string // of a client_id URL; "" for registered clients
}

type errorPage struct{ Error, Description string }

func (si *SignIn) loginPageLocked(p *pendingAuth) loginPage {
	users := make([]User, len(si.users))
	for i, u := range si.users {
		users[i] = User{Name: u.Name, Scopes: slices.Clone(u.Scopes)}
	}
	return loginPage{
		Action:    si.path + "/authorize",
		Pending:   p.id,
		Client:    p.client.name(),
		ClientID:  p.client.id,
		Host:      p.client.host(),
		Resources: p.resources,
		Requested: p.scopes,
		Users:     users,
	}
}

func (si *SignIn) consentPageLocked(p *pendingAuth) consentPage {
	granted := si.grantableLocked(p.user, p.scopes)
	var withheld []string
	for _, s := range p.scopes {
		if !slices.Contains(granted, s) {
			withheld = append(withheld, s)
		}
	}
	return consentPage{
		Action:      si.path + "/authorize",
		Pending:     p.id,
		Client:      p.client.name(),
		ClientID:    p.client.id,
		Host:        p.client.host(),
		RedirectURI: p.redirectURI,
		User:        p.user,
		Resources:   p.resources,
		Requested:   p.scopes,
		Granted:     granted,
		Withheld:    withheld,
	}
}

// renderPage writes the HTML page name. The pages carry single-use form
// ids and must not be framed (clickjacking) or cached.
func (si *SignIn) renderPage(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, "devduo: rendering page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// errorPage tells the user (not the client: RFC 6749 section 4.1.2.1
// forbids redirecting to an unverified redirect URI) why a request failed,
// as HTML, or as JSON when the caller asks for JSON and not HTML.
func (si *SignIn) errorPage(w http.ResponseWriter, r *http.Request, status int, code, desc string) {
	accept := r.Header.Get("Accept")
	if strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html") {
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, status, map[string]any{"error": code, "error_description": desc})
		return
	}
	si.renderPage(w, status, "error.html", errorPage{Error: code, Description: desc})
}
