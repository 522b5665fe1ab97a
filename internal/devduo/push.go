package devduo

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// The push page plays Duo Mobile for a person trying the dev mode: it
// shows each push the fake Duo Auth API (duotest) received the way the
// phone would and answers it with Decide. It has no authentication
// (whoever reaches it can approve any push), so it belongs on a loopback
// listener only.

//go:embed phone
var phoneFiles embed.FS

var phoneTemplate = template.Must(template.ParseFS(phoneFiles, "phone/phone.html"))

// maxDecided is how many decided pushes the phone lists after the pending
// ones.
const maxDecided = 50

// maxForm bounds the body of the page's form post.
const maxForm = 4 << 10

// phonePush is a push as the push page's JSON API shows it.
type phonePush struct {
	TxID string `json:"txid"`
	User string `json:"user"`
	// Type is the type parameter as sent; Duo Mobile shows it followed by
	// "request" ("AI agent request"), and "Login request" when it is empty.
	Type   string `json:"type"`
	Status string `json:"status"` // "pushed" while waiting; see Push.Status
	Result string `json:"result"` // "waiting", "allow" or "deny"
	// PushInfo holds the pushinfo pairs (the first value of a repeated
	// key); PushInfoPairs holds every pair in the order sent, which is the
	// order the phone shows them in.
	PushInfo      map[string]string `json:"pushinfo"`
	PushInfoPairs [][2]string       `json:"pushinfo_pairs"`
	Created       time.Time         `json:"created"`
}

// Title is what Duo Mobile shows at the top of the push (the page's
// template calls it).
func (p phonePush) Title() string {
	if p.Type == "" {
		return "Login request"
	}
	return p.Type + " request"
}

// Pending reports whether the push still waits for an answer.
func (p phonePush) Pending() bool { return p.Result == "waiting" }

// phonePushes returns what the phone shows: the pushes still waiting,
// newest first, then up to 50 decided ones, newest first.
func phonePushes(d *duotest.Duo) []phonePush {
	all := d.Pushes()
	var pending, decided []phonePush
	for i := len(all) - 1; i >= 0; i-- {
		p := toPhonePush(all[i])
		if p.Pending() {
			pending = append(pending, p)
		} else if len(decided) < maxDecided {
			decided = append(decided, p)
		}
	}
	return append(append(make([]phonePush, 0, len(pending)+len(decided)), pending...), decided...)
}

func toPhonePush(p duotest.Push) phonePush {
	out := phonePush{
		TxID:          p.TxID,
		User:          p.User,
		Type:          p.Type,
		Status:        p.Status,
		Result:        p.Result,
		PushInfo:      map[string]string{},
		PushInfoPairs: [][2]string{},
		Created:       p.Created,
	}
	for _, pair := range orderedPairs(p.RawPushInfo) {
		if _, ok := out.PushInfo[pair[0]]; !ok {
			out.PushInfo[pair[0]] = pair[1]
		}
		out.PushInfoPairs = append(out.PushInfoPairs, pair)
	}
	return out
}

// orderedPairs decodes a form-encoded string in order (url.ParseQuery
// returns a map). The fake refused pushinfo that does not parse, so an
// undecodable part cannot occur; it is skipped all the same.
func orderedPairs(raw string) [][2]string {
	var out [][2]string
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, [2]string{key, val})
	}
	return out
}

// PushPage returns a handler serving, for the fake Duo d, under prefix (such as
// "/dev/push"; "" for the root), a page that plays Duo Mobile and a JSON
// API for scripts:
//
//	GET  prefix                                a page showing each pending push as the phone would,
//	                                           with Approve and Deny buttons; it refreshes every second
//	GET  prefix/api/pushes                     [push, ...]: pending first, then recent decided ones
//	POST prefix/api/pushes/{txid}/approve      Decide(txid, true): 204; 404 unknown txid; 409 not pending
//	POST prefix/api/pushes/{txid}/deny         Decide(txid, false): likewise
//
// The page's buttons call the API; without JavaScript they post a form to
// prefix/decide, which answers with a redirect to the page. Mount the
// handler at both prefix and prefix+"/" on a mux; it serves the full
// request path. Cross-origin POSTs from browsers are refused
// (http.CrossOriginProtection), so another site open in the same browser
// cannot approve a push. There is no other protection: serve it on a
// loopback address only. PushPage panics if prefix does not start
// with "/", ends with "/" or holds a character a ServeMux pattern treats
// specially.
//
// limits, when not nil, tells where each user stands against the step-up
// fatigue guard (the push cap and the cooldown after a denial); the page
// shows it, so that someone trying the demo sees why a call is refused
// without a push, and which setting changes it.
func PushPage(d *duotest.Duo, prefix string, limits LimitsFunc) http.Handler {
	if prefix != "" && (!strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/") || strings.ContainsAny(prefix, "{} \t\n")) {
		panic(fmt.Sprintf("devduo: PushPage: prefix %q must be empty or start with / and not end with /", prefix))
	}
	page := prefix
	if page == "" {
		page = "/"
	}
	p := &phone{d: d, prefix: prefix, page: page, limits: limits}
	mux := http.NewServeMux()
	if prefix == "" {
		mux.HandleFunc("GET /{$}", p.servePage)
	} else {
		mux.HandleFunc("GET "+prefix+"/{$}", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, prefix, http.StatusMovedPermanently)
		})
		mux.HandleFunc("GET "+prefix, p.servePage)
	}
	mux.HandleFunc("GET "+prefix+"/phone.js", p.serveAsset("phone/phone.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET "+prefix+"/phone.css", p.serveAsset("phone/phone.css", "text/css; charset=utf-8"))
	mux.HandleFunc("GET "+prefix+"/api/pushes", p.serveList)
	mux.HandleFunc("GET "+prefix+"/api/limits", p.serveLimits)
	mux.HandleFunc("POST "+prefix+"/api/pushes/{txid}/approve", p.serveDecide(true))
	mux.HandleFunc("POST "+prefix+"/api/pushes/{txid}/deny", p.serveDecide(false))
	mux.HandleFunc("POST "+prefix+"/decide", p.serveForm)
	return http.NewCrossOriginProtection().Handler(mux)
}

type phone struct {
	d            *duotest.Duo
	prefix, page string
	limits       LimitsFunc
}

// LimitsFunc reads where user stands against the fatigue guard
// (stepup.Guard.Limits).
type LimitsFunc func(ctx context.Context, user string) (stepup.Limits, error)

// userLimits is one user's line of the page's limits section.
type userLimits struct {
	User string `json:"user"`
	Text string `json:"text"`
}

// userLimits reads the limits of every user the page knows: the sign-in's
// users and whoever a push went to.
func (p *phone) userLimits(ctx context.Context) []userLimits {
	if p.limits == nil {
		return nil
	}
	users := map[string]bool{}
	for _, u := range DefaultUsers() {
		users[u.Name] = true
	}
	for _, push := range p.d.Pushes() {
		users[push.User] = true
	}
	var out []userLimits
	for _, u := range slices.Sorted(maps.Keys(users)) {
		l, err := p.limits(ctx, u)
		if err != nil {
			out = append(out, userLimits{User: u, Text: "unknown: the step-up state could not be read"})
			continue
		}
		out = append(out, userLimits{User: u, Text: describeLimits(l, time.Now())})
	}
	return out
}

// describeLimits says where a user stands, in a line.
func describeLimits(l stepup.Limits, now time.Time) string {
	s := fmt.Sprintf("%d of %d pushes in the last 10 minutes", l.Pushes, l.MaxPushes)
	if !l.NextPush.IsZero() {
		s += fmt.Sprintf(", the cap is reached: calls that need approval are refused until %s", l.NextPush.Format("15:04:05"))
	}
	if !l.CoolUntil.IsZero() {
		s += fmt.Sprintf("; a denial a moment ago: refused without a push until %s (%s after a denial)", l.CoolUntil.Format("15:04:05"), l.DenyCooldown)
	}
	return s
}

type phonePage struct {
	Prefix, API, Decide, LimitsAPI string
	Pending, Decided               []phonePush
	Limits                         []userLimits
}

func (p *phone) servePage(w http.ResponseWriter, r *http.Request) {
	data := phonePage{Prefix: p.prefix, API: p.prefix + "/api/pushes", Decide: p.prefix + "/decide", Limits: p.userLimits(r.Context())}
	if p.limits != nil {
		data.LimitsAPI = p.prefix + "/api/limits"
	}
	for _, push := range phonePushes(p.d) {
		if push.Pending() {
			data.Pending = append(data.Pending, push)
		} else {
			data.Decided = append(data.Decided, push)
		}
	}
	h := w.Header()
	// The page loads its script and style from this handler only, and
	// talks only to its own API; no inline script can run.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("Content-Type", "text/html; charset=utf-8")
	noStore(h)
	// An error here is a client gone mid-page, or a page cut short that a
	// person sees; the headers are sent either way.
	_ = phoneTemplate.Execute(w, data)
}

func (p *phone) serveAsset(name, contentType string) http.HandlerFunc {
	body, err := phoneFiles.ReadFile(name)
	if err != nil {
		panic("devduo: missing embedded " + name)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(body)
	}
}

func (p *phone) serveList(w http.ResponseWriter, r *http.Request) {
	noStore(w.Header())
	writeJSON(w, http.StatusOK, phonePushes(p.d))
}

func (p *phone) serveLimits(w http.ResponseWriter, r *http.Request) {
	noStore(w.Header())
	writeJSON(w, http.StatusOK, p.userLimits(r.Context()))
}

func (p *phone) serveDecide(approve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		noStore(w.Header())
		if status, msg := p.decide(r.PathValue("txid"), approve); status != http.StatusNoContent {
			writeJSON(w, status, map[string]string{"error": msg})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// serveForm is the page's form without JavaScript: txid and
// decision=approve|deny, then back to the page.
func (p *phone) serveForm(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "The form could not be read.", http.StatusBadRequest)
		return
	}
	var approve bool
	switch r.PostForm.Get("decision") {
	case "approve":
		approve = true
	case "deny":
	default:
		http.Error(w, "The decision must be approve or deny.", http.StatusBadRequest)
		return
	}
	if status, msg := p.decide(r.PostForm.Get("txid"), approve); status != http.StatusNoContent {
		http.Error(w, msg, status)
		return
	}
	http.Redirect(w, r, p.page, http.StatusSeeOther)
}

// decide answers a push and maps Decide's errors to a status and a
// message.
func (p *phone) decide(txid string, approve bool) (int, string) {
	err := p.d.Decide(txid, approve)
	switch {
	case err == nil:
		return http.StatusNoContent, ""
	case errors.Is(err, duotest.ErrNotFound):
		return http.StatusNotFound, "no push has this transaction id"
	case errors.Is(err, duotest.ErrNotPending):
		return http.StatusConflict, "this push is no longer waiting for an answer"
	default:
		return http.StatusInternalServerError, "the push could not be answered"
	}
}

func noStore(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}
