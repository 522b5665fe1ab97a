package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/crm-mcp/crm-mcp/internal/devduo"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// crm-mcp dev runs the whole flow on one machine: the MCP server that serve
// runs, configured the way serve is (an environment map through
// loadConfig), in front of stand-ins that speak the real protocols. The
// authorization server (the rstest fake, with internal/devduo's sign-in
// pages in front) signs real JWTs that the front door verifies against its
// JWKS and introspects; the Duo Auth API (duotest) checks the real HMAC
// signatures of duo_api_golang over TLS, trusted through DUO_AUTH_CA_FILE
// as a corporate proxy's CA would be, and devduo's push page answers its
// pushes. Nothing here loosens a check: the stand-ins are what differs, not
// the code.
//
// The stand-ins have no authentication of their own (anyone who reaches
// them signs in as any user, grants any scope, approves any push), so dev
// listens on loopback only.

const (
	devDefaultAddr    = "127.0.0.1:8080"
	devDefaultDataDir = "./.crm-mcp-dev"

	devMCPPath    = "/mcp"
	devIssuerPath = "/oauth2/dev" // shaped like Duo's /oauth2/<app id>
	devPushPath   = "/dev/push"

	// devIntrospectionClient is the resource server's client at the
	// authorization server (DUO_CLIENT_ID); its secret is made per run.
	devIntrospectionClient = "crm-mcp-dev"

	// devIntrospectionCacheTTL makes a scope revoked on the admin page
	// bite on the very next call instead of up to 10 s later (the
	// default): every request is introspected, which on loopback costs a
	// millisecond.
	devIntrospectionCacheTTL = "1ms"

	// devPushTimeout ends a push nobody answers as real Duo does, so the
	// phone page does not keep offering pushes the server gave up on
	// (STEPUP_TIMEOUT is 60 s too).
	devPushTimeout = 60 * time.Second

	devCAFile      = "duo-ca.pem"
	devDBFile      = "crm.db"
	devAuditFile   = "audit.log"
	devClientsFile = "clients.json" // the sign-in's client registrations, kept across restarts
)

// devInspectorOrigins are MCP Inspector's origins: its web page calls the
// MCP endpoint from the browser.
var devInspectorOrigins = []string{"http://localhost:6274", "http://127.0.0.1:6274"}

const devUsage = `usage: crm-mcp dev [flags]

Runs the whole flow on this machine, with stand-ins for Duo that speak the
real protocols: an OAuth authorization server with users alice, bob and
carol and a scope admin page, a Duo Auth API over TLS, and a page that
plays Duo Mobile. The MCP server is the one serve runs, configured the way
serve is. For development only: anyone who reaches it can sign in as any
user and approve any push, so it listens on loopback only.

flags:
`

// devFlags are dev's flags.
type devFlags struct {
	addr, dataDir, autoLogin string
	gateway                  string // a policy file: serve the gateway (gateway.go)
}

// parseDevFlags parses dev's arguments; ok is false when dev should exit
// with code.
func (a *app) parseDevFlags(args []string) (f devFlags, code int, ok bool) {
	fs := flag.NewFlagSet("crm-mcp dev", flag.ContinueOnError)
	// The flag package prints the usage itself when it meets -h or a bad
	// flag; held here, it goes once, to stdout when asked for and to
	// stderr with a mistake.
	var parseOut bytes.Buffer
	fs.SetOutput(&parseOut)
	fs.StringVar(&f.addr, "addr", devDefaultAddr, "listen `address`, loopback only; port 0 picks a free port")
	fs.StringVar(&f.dataDir, "data-dir", devDefaultDataDir, "`directory` for the CRM database, the audit log, the client registrations and the Duo stand-in's CA certificate")
	fs.StringVar(&f.autoLogin, "auto-login", "", "sign every authorization in as `user` (alice, bob or carol), without the login page")
	fs.StringVar(&f.gateway, "gateway", "", "serve the gateway in front of the upstreams of this policy `file` (GATEWAY_POLICY) instead of the CRM; alice holds every scope it names, bob and carol its *.read ones")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), devUsage)
		fs.PrintDefaults()
	}
	err := fs.Parse(args)
	fs.SetOutput(a.stderr)
	if errors.Is(err, flag.ErrHelp) {
		a.stdout.Write(parseOut.Bytes())
		return f, 0, false
	}
	if err != nil {
		a.stderr.Write(parseOut.Bytes()) // the problem and the usage
		return f, 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(a.stderr, "crm-mcp dev: unexpected arguments %q\n\n", fs.Args())
		fs.Usage()
		return f, 2, false
	}
	if f.autoLogin != "" && !slices.ContainsFunc(devduo.DefaultUsers(), func(u devduo.User) bool { return u.Name == f.autoLogin }) {
		fmt.Fprintf(a.stderr, "crm-mcp dev: -auto-login %q is not a dev user: want alice, bob or carol\n", truncate(f.autoLogin))
		return f, 2, false
	}
	if strings.TrimSpace(f.dataDir) == "" {
		fmt.Fprintln(a.stderr, "crm-mcp dev: -data-dir must not be empty")
		return f, 2, false
	}
	return f, 0, true
}

// dev runs crm-mcp dev until ctx is cancelled.
func (a *app) dev(ctx context.Context, args []string) int {
	f, code, ok := a.parseDevFlags(args)
	if !ok {
		return code
	}
	ln, err := devListen(f.addr)
	if err != nil {
		fmt.Fprintf(a.stderr, "crm-mcp dev: %v\n", err)
		var refused *notLoopbackError
		if errors.As(err, &refused) {
			return 2
		}
		return 1
	}
	defer ln.Close() // serveConfig closes it too; this is for the early returns

	dev, err := newDevStack(ln.Addr().String(), f.dataDir, f.autoLogin)
	if err != nil {
		fmt.Fprintf(a.stderr, "crm-mcp dev: %v\n", err)
		return 1
	}
	defer dev.close()
	// On Ctrl-C the Duo stand-in goes at once: the phone page stops with
	// the server, so a tool call still waiting on a push learns that Duo
	// is gone instead of holding the shutdown until its deadline.
	stop := context.AfterFunc(ctx, dev.close)
	defer stop()

	env, notes, err := dev.environ(a.environ)
	if err != nil {
		fmt.Fprintf(a.stderr, "crm-mcp dev: %v\n", err)
		return 2
	}
	for _, n := range notes {
		fmt.Fprintf(a.stderr, "crm-mcp dev: %s\n", n)
	}
	if p, ok := env["AUDIT_LOG_PATH"]; ok {
		dev.auditLog = p
	}
	if err := dev.writeServeEnv(); err != nil {
		fmt.Fprintf(a.stderr, "crm-mcp dev: %v\n", err)
		return 1
	}
	if f.gateway != "" {
		env["GATEWAY_POLICY"] = f.gateway
	}
	cfg, err := loadConfig(env)
	if err != nil {
		fmt.Fprintf(a.stderr, "crm-mcp dev: invalid configuration:\n%s", formatConfigErrors(err))
		return 1
	}
	var gatewayEndpoint func(context.Context, endpointDeps) (endpoint, pinger, error)
	var gatewayTools []string
	if f.gateway != "" {
		pol, err := a.loadGatewayPolicy(&cfg)
		if err != nil {
			fmt.Fprintf(a.stderr, "crm-mcp dev: invalid gateway policy (-gateway):\n%s", formatConfigErrors(err))
			return 1
		}
		dev.signIn.SetUsers(devGatewayUsers(cfg.ScopesSupported)...)
		gatewayEndpoint, gatewayTools = a.gatewayEndpoint(pol), gatewayToolNames(pol)
		dev.gatewayTools = gatewayTools
	}
	return a.serveConfig(ctx, cfg, serveOptions{
		endpoint:  gatewayEndpoint,
		toolNames: gatewayTools,
		command:   "dev",
		listener:  ln,
		routes:    dev.routes,
		guard:     dev.guard.Store,
		ready: func(string) {
			io.WriteString(a.stdout, dev.banner())
			if a.devStarted != nil {
				a.devStarted(dev)
			}
		},
	})
}

// notLoopbackError refuses an address other machines could reach.
type notLoopbackError struct{ addr string }

func (e *notLoopbackError) Error() string {
	return fmt.Sprintf("-addr %q is not a loopback address: dev's stand-ins let anyone who reaches them sign in as any user and approve any push, so it listens only on 127.0.0.1, ::1 or localhost", truncate(e.addr))
}

// devListen listens on addr, which must name a loopback host.
func devListen(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("-addr %q is not host:port, like %s or 127.0.0.1:0", truncate(addr), devDefaultAddr)
	}
	// Refused before listening, so that not even a moment is spent on an
	// address other machines reach; "localhost" is checked after.
	if ip := net.ParseIP(host); !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
		return nil, &notLoopbackError{addr}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s (is another process using it? try -addr 127.0.0.1:0): %v", addr, err)
	}
	// "localhost" is whatever the resolver says; hold it to its word.
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		ln.Close()
		return nil, &notLoopbackError{addr}
	}
	return ln, nil
}

// isLoopbackAddr reports whether addr is host:port with a loopback IP
// address as host. A name, even "localhost", is whatever the resolver
// says, and serve listens on it after dev has checked, so it is refused.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	ip, perr := netip.ParseAddr(host)
	return err == nil && perr == nil && ip.IsLoopback()
}

// devStack is dev's stand-ins and the URLs derived from the address it
// listens on.
type devStack struct {
	addr     string // 127.0.0.1:PORT, where the server listens
	base     string // http://127.0.0.1:PORT
	mcpURL   string
	issuer   string
	pushURL  string
	adminURL string
	dataDir  string
	caFile   string
	auditLog string

	signIn              *devduo.SignIn
	duo                 *duotest.Server
	duoHost             string // the Duo stand-in's host:port
	introspectionSecret string
	autoLogin           string
	// gatewayTools are the tools of the gateway dev serves (--gateway),
	// for the banner; nil when it serves the CRM.
	gatewayTools []string
	// guard is the server's step-up Guard once built, for the push page's
	// limits; nil until then, and with step-up off.
	guard atomic.Pointer[stepup.Guard]

	closeOnce sync.Once
}

// newDevStack starts the stand-ins for a server listening on addr and
// writes the Duo stand-in's certificate to dataDir.
func newDevStack(addr, dataDir, autoLogin string) (*devStack, error) {
	if _, port, _ := net.SplitHostPort(addr); port == "65535" {
		return nil, fmt.Errorf("port 65535 leaves none for the crm-mcp serve of serve.env (dev's port plus one): pick a lower -addr port")
	}
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("data directory %q: %v", dataDir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the data directory: %v", err)
	}
	base := "http://" + addr
	s := &devStack{
		addr:      addr,
		base:      base,
		mcpURL:    base + devMCPPath,
		issuer:    base + devIssuerPath,
		pushURL:   base + devPushPath,
		dataDir:   dir,
		caFile:    filepath.Join(dir, devCAFile),
		auditLog:  filepath.Join(dir, devAuditFile),
		autoLogin: autoLogin,
		// A fresh secret per run: the resource server authenticates to
		// the introspection endpoint with it, as with Duo.
		introspectionSecret: rand.Text(),
	}

	as := rstest.NewAuthServer(s.issuer)
	as.SetIntrospectionClient(devIntrospectionClient, s.introspectionSecret)
	as.KID("RS256") // the signing key exists before the first JWKS fetch
	s.signIn = devduo.NewSignIn(as)
	s.signIn.SetUsers(devduo.DefaultUsers()...)
	_, serveURL := s.serveURL()
	s.signIn.SetResources(s.mcpURL, serveURL) // serve pointed at the stand-ins too (serve.env)
	s.signIn.SetAutoLogin(autoLogin)
	// Kept, so that a client that stored its client_id (MCP Inspector
	// does) still signs in after a restart instead of meeting
	// invalid_client.
	if err := s.signIn.KeepClients(filepath.Join(dir, devClientsFile)); err != nil {
		return nil, fmt.Errorf("cannot read the client registrations (delete the file to start afresh; clients then register again): %v", err)
	}
	s.adminURL = s.signIn.AdminURL()

	s.duo = duotest.NewServer()
	// Set before anyone knows the fake's address, so before it serves.
	s.duo.PushTimeout = devPushTimeout
	s.duo.SetDefault(duotest.Manual)
	s.duoHost = s.duo.Host()
	if err := os.WriteFile(s.caFile, s.duo.CACertPEM(), 0o600); err != nil {
		s.duo.Close()
		return nil, fmt.Errorf("cannot write the Duo stand-in's certificate: %v", err)
	}
	return s, nil
}

// close stops the Duo stand-in. It may be called more than once.
func (s *devStack) close() {
	s.closeOnce.Do(s.duo.Close)
}

// devOwned are the settings dev makes itself, and why: they point the
// server at dev's stand-ins. The same variables in the environment are
// named at start as overridden (never their values, which may be secret).
var devOwned = map[string]string{
	"MCP_LISTEN_ADDR":       "dev listens on --addr, on loopback only",
	"MCP_RESOURCE_URL":      "dev's MCP URL follows --addr",
	"DUO_ISSUER":            "dev runs its own stand-in of Duo's sign-in server",
	"DUO_JWKS_URL":          "dev runs its own stand-in of Duo's sign-in server",
	"DUO_INTROSPECTION_URL": "dev runs its own stand-in of Duo's sign-in server",
	"DUO_AUDIENCES":         "dev's tokens name dev's MCP URL",
	"AUTH_MODE":             "dev checks its stand-in's tokens by signature and introspection, so a revoked scope bites at once",
	"DUO_CLIENT_ID":         "dev introspects with its own stand-in's client",
	"DUO_CLIENT_SECRET":     "dev introspects with its own stand-in's client",
	"DUO_AUTH_IKEY":         "dev runs its own stand-in of Duo's Auth API",
	"DUO_AUTH_SKEY":         "dev runs its own stand-in of Duo's Auth API",
	"DUO_AUTH_HOST":         "dev runs its own stand-in of Duo's Auth API",
	"DUO_AUTH_CA_FILE":      "dev runs its own stand-in of Duo's Auth API",
	"CRM_DB_PATH":           "dev keeps the CRM in --data-dir",
}

// devRefused are settings dev cannot honour: it stops and says why
// rather than run something other than what was asked for.
var devRefused = map[string]string{
	"CRM_DATABASE_URL":   "dev keeps the CRM and the step-up state in --data-dir, on SQLite; run crm-mcp serve to use Postgres",
	"DUO_USERNAME_CLAIM": "dev's tokens name the Duo user in sub only",
	"DUO_SEND_USER_ID":   "dev's Duo stand-in knows its users by username (the token's sub), not by a Duo user ID",
}

// devDefaults are dev's own defaults for settings the environment may
// change: a push cap and a cooldown that suit trying the demo (serve's
// 5 pushes in 10 minutes and 60 s stop a demo within minutes).
var devDefaults = map[string]string{
	"MCP_ALLOWED_ORIGINS":          strings.Join(devInspectorOrigins, ","),
	"AUTH_INTROSPECTION_CACHE_TTL": devIntrospectionCacheTTL,
	"LOG_FORMAT":                   "text",
	"STEPUP_MAX_PUSHES":            "20",
	"STEPUP_DENY_COOLDOWN":         "10s",
}

// environ is the environment serve is given to run against the stand-ins:
// dev's own settings (devOwned), over the user's environment for every
// other setting serve reads, over dev's defaults. notes say what was
// overridden or taken from the environment; an error names the settings
// dev cannot honour.
func (s *devStack) environ(user map[string]string) (env map[string]string, notes []string, err error) {
	env = maps.Clone(devDefaults)
	env["AUDIT_LOG_PATH"] = s.auditLog
	var refused, overridden, taken []string
	for _, name := range knownVariables() {
		v, ok := user[name]
		switch {
		case !ok:
		case devRefused[name] != "":
			refused = append(refused, fmt.Sprintf("%s is set, but %s", name, devRefused[name]))
		case devOwned[name] != "":
			overridden = append(overridden, fmt.Sprintf("ignoring %s from the environment: %s", name, devOwned[name]))
		case name == "METRICS_ADDR" && v != "" && !isLoopbackAddr(v):
			refused = append(refused, fmt.Sprintf("METRICS_ADDR %q is not a loopback address, but dev listens only on loopback: use 127.0.0.1:PORT or [::1]:PORT", truncate(v)))
		default:
			env[name] = v
			taken = append(taken, name)
		}
	}
	if len(refused) > 0 {
		slices.Sort(refused)
		return nil, nil, fmt.Errorf("cannot run with this environment:\n  %s\nunset them for crm-mcp dev", strings.Join(refused, "\n  "))
	}
	slices.Sort(overridden)
	notes = overridden
	if len(taken) > 0 {
		slices.Sort(taken)
		notes = append(notes, "taken from the environment: "+strings.Join(taken, ", "))
	}
	maps.Copy(env, map[string]string{
		"MCP_LISTEN_ADDR":   s.addr, // for the log: serve is handed the listener
		"MCP_RESOURCE_URL":  s.mcpURL,
		"DUO_ISSUER":        s.issuer,
		"AUTH_MODE":         "jwt+introspection",
		"DUO_CLIENT_ID":     devIntrospectionClient,
		"DUO_CLIENT_SECRET": s.introspectionSecret,
		"DUO_AUTH_IKEY":     s.duo.IKey(),
		"DUO_AUTH_SKEY":     s.duo.SKey(),
		"DUO_AUTH_HOST":     s.duoHost,
		"DUO_AUTH_CA_FILE":  s.caFile,
		"CRM_DB_PATH":       filepath.Join(s.dataDir, devDBFile),
	})
	return env, notes, nil
}

// devServeEnvFile holds the settings that point crm-mcp serve at dev's
// stand-ins, in the data folder: they include the Duo stand-in's keys,
// so they go to a file (mode 0600) and not to the terminal. Its values are
// quoted for sh, which reads it (". serve.env").
const devServeEnvFile = "serve.env"

// serveURL is the MCP URL of a crm-mcp serve pointed at the stand-ins:
// dev's port plus one. dev's sign-in issues tokens for it too.
func (s *devStack) serveURL() (addr, mcpURL string) {
	host, port, _ := net.SplitHostPort(s.addr)
	p, _ := strconv.Atoi(port)
	addr = net.JoinHostPort(host, strconv.Itoa(p+1))
	return addr, "http://" + addr + devMCPPath
}

// writeServeEnv writes devServeEnvFile: crm-mcp serve with these settings
// validates tokens of dev's sign-in (by signature) and sends its pushes to
// dev's Duo stand-in, whose push page shows them. For the demo only.
//
// The file is written whole under another name, mode 0600, and renamed
// over the old one: os.WriteFile would keep the mode of a file already
// there, and a reader would never see half of it.
func (s *devStack) writeServeEnv() error {
	addr, mcpURL := s.serveURL()
	path := filepath.Join(s.dataDir, devServeEnvFile)
	var b strings.Builder
	b.WriteString("# crm-mcp serve against crm-mcp dev's stand-ins, for the demo only:\n")
	b.WriteString("#   set -a; . " + shellQuote(path) + "; set +a; crm-mcp serve\n")
	b.WriteString("# Written by crm-mcp dev at each start; the keys are the stand-in's, valid while dev runs.\n")
	for _, kv := range [][2]string{
		{"MCP_LISTEN_ADDR", addr},
		{"MCP_RESOURCE_URL", mcpURL},
		{"DUO_ISSUER", s.issuer},
		{"AUTH_MODE", "jwt"},
		{"DUO_AUTH_IKEY", s.duo.IKey()},
		{"DUO_AUTH_SKEY", s.duo.SKey()},
		{"DUO_AUTH_HOST", s.duoHost},
		{"DUO_AUTH_CA_FILE", s.caFile},
		{"CRM_DB_PATH", filepath.Join(s.dataDir, "serve-"+devDBFile)},
		{"AUDIT_LOG_PATH", filepath.Join(s.dataDir, "serve-"+devAuditFile)},
	} {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], shellQuote(kv[1]))
	}
	f, err := os.CreateTemp(s.dataDir, devServeEnvFile+".*") // mode 0600
	if err != nil {
		return fmt.Errorf("cannot write %s: %v", path, err)
	}
	_, err = f.WriteString(b.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("cannot write %s: %v", path, err)
	}
	return nil
}

// shellQuote quotes s as one word for sh: inside single quotes nothing is
// special but the quote itself, which closes them, adds an escaped quote
// and opens them again.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// routes mounts the stand-ins beside the MCP server: the authorization
// server at its issuer's paths, the phone page and an index.
func (s *devStack) routes(mux *http.ServeMux) {
	// RFC 8414 metadata sits at the root with the issuer's path appended;
	// everything else (OpenID discovery, JWKS, register, authorize, token,
	// introspect, revoke, admin) is under the issuer's path.
	as := s.loopbackOnly(s.signIn)
	mux.Handle("/.well-known/oauth-authorization-server"+devIssuerPath, as)
	mux.Handle(devIssuerPath+"/", as)
	phone := s.loopbackOnly(devduo.PushPage(s.duo.Duo, devPushPath, s.limits))
	mux.Handle(devPushPath, phone)
	mux.Handle(devPushPath+"/", phone)
	mux.Handle("GET /{$}", s.loopbackOnly(http.HandlerFunc(s.serveIndex)))
}

// limits reads where user stands against the step-up Guard's cap and
// cooldown, for the push page.
func (s *devStack) limits(ctx context.Context, user string) (stepup.Limits, error) {
	g := s.guard.Load()
	if g == nil {
		return stepup.Limits{}, errors.New("step-up is not running")
	}
	return g.Limits(ctx, user)
}

// loopbackOnly refuses requests whose Host is not this server's loopback
// address. The stand-ins authenticate nobody (anyone may sign in as any
// user or approve a push), and a page whose name was rebound to 127.0.0.1
// (DNS rebinding) would otherwise reach them as its own origin.
func (s *devStack) loopbackOnly(h http.Handler) http.Handler {
	_, port, _ := net.SplitHostPort(s.addr)
	allowed := map[string]bool{"127.0.0.1:" + port: true, "localhost:" + port: true, "[::1]:" + port: true}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowed[strings.ToLower(r.Host)] {
			http.Error(w, "dev mode answers only on its loopback address", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// snippets returns the client configurations printed at start, each a
// single line of JSON.
func (s *devStack) snippets() (claude, vscode string) {
	// Structs, not maps, to keep the keys in the order people write them.
	type stdioServer struct {
		Command string   `json:"command"`
		Args    []string `json:"args"`
	}
	type httpServer struct {
		Type string `json:"type"`
		URL  string `json:"url"`
	}
	c, _ := json.Marshal(struct {
		MCPServers map[string]stdioServer `json:"mcpServers"`
	}{map[string]stdioServer{"crm": {Command: "npx", Args: []string{"mcp-remote", s.mcpURL}}}})
	v, _ := json.Marshal(struct {
		Servers map[string]httpServer `json:"servers"`
	}{map[string]httpServer{"crm": {Type: "http", URL: s.mcpURL}}})
	return string(c), string(v)
}

// inspectorCLI is the MCP Inspector CLI command line that lists the tools.
// MCP_AUTO_OPEN_ENABLED=false makes it print the sign-in URL instead of
// opening a browser the machine may not have (it then needs a terminal for
// the prompt). The Inspector 2.x needs Node >= 22.19, so npx fetches
// node@22 beside it, whose node comes first on the PATH the Inspector's
// "#!/usr/bin/env node" searches. "@2" because npm on an older Node
// otherwise picks the newest Inspector that Node supports, the 0.x one,
// which does not sign in. Tried with Inspector 2.12.0 against dev: one
// sign-in, then tools/list and list_deals.
func (s *devStack) inspectorCLI() string {
	return "MCP_AUTO_OPEN_ENABLED=false npx -y -p node@22 -p @modelcontextprotocol/inspector@2 mcp-inspector --cli " +
		s.mcpURL + " --transport http --method tools/list"
}

// banner is what dev prints on stdout once it serves. Its last line,
// "crm-mcp dev ready: <MCP URL>", is a contract: test harnesses start the
// binary and wait for it.
func (s *devStack) banner() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "crm-mcp dev: the whole flow on this machine, with stand-ins for Duo.\n")
	fmt.Fprintf(&b, "For development only: anyone who reaches these pages can sign in as any user\nand approve any push.\n\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  MCP server\t%s\t(Streamable HTTP)\n", s.mcpURL)
	fmt.Fprintf(tw, "  Push page\t%s\t(plays Duo Mobile: approve or deny pushes)\n", s.pushURL)
	fmt.Fprintf(tw, "  Scope admin\t%s\t(plays Duo's Scope Authorization)\n", s.adminURL)
	fmt.Fprintf(tw, "  Sign-in\t%s\t(issuer: plays Duo's OAuth authorization server)\n", s.issuer)
	fmt.Fprintf(tw, "  Duo Auth API\thttps://%s\t(TLS, trusted through %s)\n", s.duoHost, s.caFile)
	fmt.Fprintf(tw, "  Data\t%s\t(%s: the CRM, seeded on first start; %s: registered clients)\n", s.dataDir, devDBFile, devClientsFile)
	fmt.Fprintf(tw, "  Audit log\t%s\t(one line per decision; crm-mcp audit verify checks it)\n", s.auditLog)
	tw.Flush()

	_, serveURL := s.serveURL()
	fmt.Fprintf(&b, "\nPoint crm-mcp serve at these stand-ins (for the demo only; the file holds the\nDuo stand-in's keys): its MCP URL is %s, its pushes appear on the push page.\n", serveURL)
	fmt.Fprintf(&b, "  set -a; . %s; set +a; crm-mcp serve\n", shellQuote(filepath.Join(s.dataDir, devServeEnvFile)))

	fmt.Fprintf(&b, "\nUsers (no password: pick one on the login page, or pass login_hint):\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, u := range s.signIn.Users() {
		fmt.Fprintf(tw, "  %s\t%s\n", u.Name, strings.Join(u.Scopes, " "))
	}
	tw.Flush()
	if s.autoLogin != "" {
		fmt.Fprintf(&b, "Auto-login: every authorization signs in as %s.\n", s.autoLogin)
	}

	claude, vscode := s.snippets()
	fmt.Fprintf(&b, "\nConnect a client:\n")
	fmt.Fprintf(&b, "  MCP Inspector: run\n    npx @modelcontextprotocol/inspector\n")
	fmt.Fprintf(&b, "  then choose Transport Type \"Streamable HTTP\", URL %s, and Connect.\n", s.mcpURL)
	fmt.Fprintf(&b, "  MCP Inspector CLI, in a terminal without a browser (it needs Node >= 22.19,\n")
	fmt.Fprintf(&b, "  which npx fetches here; open the sign-in URL it prints in any browser):\n")
	fmt.Fprintf(&b, "    %s\n", s.inspectorCLI())
	fmt.Fprintf(&b, "  Claude Desktop, through mcp-remote (claude_desktop_config.json):\n    %s\n", claude)
	fmt.Fprintf(&b, "  VS Code (.vscode/mcp.json):\n    %s\n", vscode)

	if s.gatewayTools != nil {
		fmt.Fprintf(&b, "\nThe gateway serves these upstream tools (the policy names them):\n  %s\n", strings.Join(s.gatewayTools, "\n  "))
		fmt.Fprintf(&b, "Call one that the policy sends for approval (everything.get-env in the example):\n")
		fmt.Fprintf(&b, "a push appears on the push page; approve it and the upstream's answer comes\n")
		fmt.Fprintf(&b, "back, deny it and the call is never forwarded. Sign in as bob for a tool he\n")
		fmt.Fprintf(&b, "lacks the scope of and it is refused. Ctrl-C stops.\n\n")
	} else {
		fmt.Fprintf(&b, "\nThen ask the agent to list the contacts, and to find the defence accounts:\n")
		fmt.Fprintf(&b, "a push appears on the push page; approve it and the record comes back, deny\n")
		fmt.Fprintf(&b, "it and the agent is stopped. Revoke a scope on the admin page and the next\n")
		fmt.Fprintf(&b, "call that needs it is refused. Ctrl-C stops.\n\n")
	}
	fmt.Fprintf(&b, "crm-mcp dev ready: %s\n", s.mcpURL)
	return b.String()
}

var devIndex = template.Must(template.New("index").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>crm-mcp dev</title></head>
<body>
<h1>crm-mcp dev</h1>
<p>The CRM MCP server with stand-ins for Duo. For development only.</p>
<ul>
<li>MCP server (Streamable HTTP): <code>{{.MCP}}</code></li>
<li><a href="{{.Push}}">Push page</a>: plays Duo Mobile; approve or deny pushes</li>
<li><a href="{{.Admin}}">Scope admin</a>: plays Duo's Scope Authorization</li>
<li>Authorization server (issuer): <code>{{.Issuer}}</code></li>
</ul>
<h2>Users</h2>
<ul>{{range .Users}}<li><b>{{.Name}}</b>: {{range .Scopes}}<code>{{.}}</code> {{end}}</li>{{end}}</ul>
</body>
</html>
`))

// serveIndex is a page of links, for whoever opens the base URL.
func (s *devStack) serveIndex(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	_ = devIndex.Execute(w, map[string]any{
		"MCP": s.mcpURL, "Push": devPushPath, "Admin": devIssuerPath + "/admin", "Issuer": s.issuer,
		"Users": s.signIn.Users(),
	})
}

// devGatewayUsers are dev's users in front of a gateway: alice holds every
// scope of its policy, bob and carol the read ones.
func devGatewayUsers(scopes []string) []devduo.User {
	var reads []string
	for _, s := range scopes {
		if strings.HasSuffix(s, ".read") {
			reads = append(reads, s)
		}
	}
	return []devduo.User{{Name: "alice", Scopes: scopes}, {Name: "bob", Scopes: reads}, {Name: "carol", Scopes: reads}}
}
