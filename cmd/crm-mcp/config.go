package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/tools"
)

// config is everything the binary can be told. It is read from the
// environment, and only here: the packages it wires take typed values
// (house style). The variable names are a public contract, documented in
// the README; change them only with a migration note.
type config struct {
	ListenAddr            string   `env:"MCP_LISTEN_ADDR" envDefault:"127.0.0.1:8080"`
	ResourceURL           string   `env:"MCP_RESOURCE_URL,required,notEmpty"`
	AllowedOrigins        []string `env:"MCP_ALLOWED_ORIGINS"`
	ScopesSupported       []string `env:"MCP_SCOPES_SUPPORTED"` // unset: tools.Scopes()
	HideUnauthorizedTools bool     `env:"MCP_HIDE_UNAUTHORIZED_TOOLS" envDefault:"false"`
	ResourceName          string   `env:"MCP_RESOURCE_NAME" envDefault:"CRM (Duo protected)"`
	ResourceDocumentation string   `env:"MCP_RESOURCE_DOCUMENTATION"`

	Issuers          []string `env:"DUO_ISSUER,required,notEmpty"`
	JWKSURL          string   `env:"DUO_JWKS_URL"`
	Audiences        []string `env:"DUO_AUDIENCES"`
	AuthMode         string   `env:"AUTH_MODE" envDefault:"jwt"`
	ClientID         string   `env:"DUO_CLIENT_ID"`
	ClientSecret     secret   `env:"DUO_CLIENT_SECRET"`
	IntrospectionURL string   `env:"DUO_INTROSPECTION_URL"`

	// The defaults repeat resourceserver's Default* constants (a test keeps
	// them equal) so that the effective values can be logged at start.
	Leeway                time.Duration `env:"AUTH_LEEWAY" envDefault:"30s"`
	CacheTTL              time.Duration `env:"AUTH_CACHE_TTL" envDefault:"5m"`
	IntrospectionCacheTTL time.Duration `env:"AUTH_INTROSPECTION_CACHE_TTL" envDefault:"10s"`

	LimitSettings
	StepUpSettings

	DBPath string `env:"CRM_DB_PATH" envDefault:"./data/crm.db"`
	// DatabaseURL, when set, selects Postgres for the CRM and the shared
	// step-up state instead of the SQLite file (see database.go).
	DatabaseURL secret `env:"CRM_DATABASE_URL"`

	ObserveSettings // the audit trail, metrics and replicas (observe.go)

	// GatewayPolicy is the gateway's policy file (crm-mcp gateway): its
	// upstreams and their governed tools. serve does not read it.
	GatewayPolicy string `env:"GATEWAY_POLICY"`

	LogLevel  string `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat string `env:"LOG_FORMAT" envDefault:"json"`

	// Derived by loadConfig; env skips unexported fields.
	stepUpState stepup.State // the shared step-up state, once opened (database.go)
	mode        resourceserver.Mode
	level       slog.Level
	mcpPath     string   // the resource URL's path, where MCP is served
	unknown     []string // variables with our prefixes that nothing reads (typos?)
	warnings    []string // accepted but probably not meant
}

// secret holds a credential. Every way of printing it says "set" or
// "unset" instead, so a stray %v, a log attribute or a JSON dump of the
// configuration cannot leak it; reveal is the one way to the value.
type secret string

func (s secret) reveal() string { return string(s) }

func (s secret) String() string {
	if s == "" {
		return "unset"
	}
	return "set"
}

func (s secret) GoString() string                    { return s.String() }
func (s secret) Format(f fmt.State, _ rune)          { io.WriteString(f, s.String()) }
func (s secret) LogValue() slog.Value                { return slog.StringValue(s.String()) }
func (s secret) MarshalJSON() ([]byte, error)        { return strconv.AppendQuote(nil, s.String()), nil }
func (s secret) MarshalText() (text []byte, _ error) { return []byte(s.String()), nil }

// envPrefixes are the prefixes of the variables this binary reads. A set
// variable with one of them that nothing reads is most likely a typo
// (MCP_STATLESS=true), which would otherwise go unnoticed.
var envPrefixes = []string{"MCP_", "DUO_", "AUTH_", "CRM_", "LOG_", "STEPUP_", "SENSITIVE_", "AUDIT_", "METRICS_"}

// retiredVariables are the variables earlier versions read and this one
// does not, each with why. A deployment upgraded with one still set starts
// (refusing would break the upgrade) but is told, at start, that it no
// longer does anything: silently ignoring it would let an operator believe
// a bound or a mode still applies. Keep an entry for a year or two of
// releases, then let it fall to the typo warning of unknownVariables.
var retiredVariables = map[string]string{
	// Since the 2026-07-28 revision became the default (issue 17): one
	// stateless endpoint serves it and every earlier revision.
	"MCP_STATELESS": "the server is always stateless now: one endpoint serves MCP 2026-07-28 and the earlier revisions, " +
		"without Streamable HTTP sessions, and any replica takes any request",
	"MCP_STICKY_SESSIONS": "there are no MCP sessions to pin to a replica any more: any replica takes any request, " +
		"so the load balancer needs no sticky sessions",
	"MCP_SESSION_IDLE_TIMEOUT":  sessionsGone,
	"MCP_MAX_SESSIONS_PER_USER": sessionsGone,
	"MCP_MAX_SESSIONS":          sessionsGone,
}

const sessionsGone = "there are no MCP sessions to bound any more (the server is stateless); " +
	"MCP_MAX_REQUESTS_PER_USER and MCP_MAX_REQUESTS bound what a user and all users hold open"

// reservedPaths are served by the binary itself; the MCP endpoint cannot
// take them.
var reservedPaths = []string{"/healthz", "/readyz"}

// varError is one configuration problem, always naming the variable.
type varError struct {
	name string
	msg  string
}

func (e *varError) Error() string { return e.name + ": " + e.msg }

func varErrorf(name, format string, args ...any) error {
	return &varError{name: name, msg: fmt.Sprintf(format, args...)}
}

// loadConfig reads and validates the configuration from environ, which
// holds the whole environment (tests pass their own). It reports every
// problem at once (errors.Join), each one naming its variable. No error
// ever contains the value of a secret.
//
// The libraries own the validation of what they are given
// (resourceserver.Config.Validate, stepup.Config.Validate); loadConfig
// runs them, names the variable behind each field they refuse (see
// libraryVars), and checks only what belongs to the binary: the listen
// address, the MCP path, upper limits, modes and lists.
func loadConfig(environ map[string]string) (config, error) {
	if environ == nil {
		// env.Options treats a nil map as "use the process environment".
		environ = map[string]string{}
	}
	var c config
	var errs []error
	// Variables already refused, by env or by a check here: the libraries'
	// complaints about the same variables would only repeat them.
	failed := map[string]bool{}
	check := func(name string, err error) {
		if err != nil && !failed[name] {
			errs = append(errs, err)
			failed[name] = true
		}
	}
	if err := env.ParseWithOptions(&c, env.Options{Environment: environ}); err != nil {
		for _, e := range leafErrors(err) {
			ve := describeEnvError(e, environ)
			var v *varError
			if errors.As(ve, &v) {
				check(v.name, ve)
			} else {
				errs = append(errs, ve)
			}
		}
	}
	c.AllowedOrigins = cleanList(c.AllowedOrigins)
	c.ScopesSupported = cleanList(c.ScopesSupported)
	c.Issuers = cleanList(c.Issuers)
	c.Audiences = cleanList(c.Audiences)
	c.JWKSURL = strings.TrimSpace(c.JWKSURL)
	c.IntrospectionURL = strings.TrimSpace(c.IntrospectionURL)
	c.ClientID = strings.TrimSpace(c.ClientID)
	c.mode = cmp.Or(resourceserver.Mode(strings.ToLower(strings.TrimSpace(c.AuthMode))), resourceserver.ModeJWT)

	check("MCP_LISTEN_ADDR", checkListenAddr(c.ListenAddr))
	if !failed["MCP_RESOURCE_URL"] {
		path, err := mcpPath(c.ResourceURL)
		check("MCP_RESOURCE_URL", err)
		c.mcpPath = path
	}
	// Unset, every scope a tool needs: one sign-in covers every tool the
	// user is granted. Set, it narrows them (least privilege); the other
	// scopes are then asked for through 403 insufficient_scope challenges.
	if strings.TrimSpace(environ["MCP_SCOPES_SUPPORTED"]) == "" {
		c.ScopesSupported = tools.Scopes()
	} else if len(c.ScopesSupported) == 0 {
		check("MCP_SCOPES_SUPPORTED", varErrorf("MCP_SCOPES_SUPPORTED", "lists no scope: clients need at least one to ask for (unset, it lists every scope a tool needs)"))
	}
	if c.JWKSURL != "" && len(c.Issuers) > 1 {
		check("DUO_JWKS_URL", varErrorf("DUO_JWKS_URL", "can only be set with a single DUO_ISSUER (%d are listed): each issuer's keys are discovered from its own metadata", len(c.Issuers)))
	}
	// Sending issuer B's tokens to issuer A's endpoint would hand them to
	// the wrong server; with several issuers, discovery finds each one's
	// own endpoint.
	if c.IntrospectionURL != "" && c.mode != resourceserver.ModeJWT && len(c.Issuers) > 1 {
		check("DUO_INTROSPECTION_URL", varErrorf("DUO_INTROSPECTION_URL", "can only be set with a single DUO_ISSUER (%d are listed): each issuer's endpoint is discovered from its own metadata", len(c.Issuers)))
	}
	for _, a := range c.Audiences {
		if a == c.ResourceURL {
			c.warnings = append(c.warnings, "DUO_AUDIENCES lists MCP_RESOURCE_URL, which is always accepted")
		}
	}
	switch c.mode {
	case resourceserver.ModeIntrospection:
		if c.JWKSURL != "" {
			c.warnings = append(c.warnings, "DUO_JWKS_URL is ignored: AUTH_MODE is introspection")
		}
	case resourceserver.ModeJWT:
		for _, name := range []string{"DUO_CLIENT_ID", "DUO_CLIENT_SECRET", "DUO_INTROSPECTION_URL"} {
			if environ[name] != "" {
				c.warnings = append(c.warnings, name+" is ignored: AUTH_MODE is jwt")
			}
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		max  time.Duration
	}{
		{"AUTH_LEEWAY", c.Leeway, 5 * time.Minute},
		{"AUTH_CACHE_TTL", c.CacheTTL, 24 * time.Hour},
		{"AUTH_INTROSPECTION_CACHE_TTL", c.IntrospectionCacheTTL, 24 * time.Hour},
	} {
		switch {
		case d.v == 0: // resourceserver reads 0 as "the default", so 0 cannot mean none
			check(d.name, varErrorf(d.name, "must be greater than zero (0 would mean the default)"))
		case d.v > d.max:
			check(d.name, varErrorf(d.name, "must be at most %s, got %s", d.max, d.v))
		}
	}

	c.checkStepUp(check)
	c.checkLimits(check)

	if strings.TrimSpace(c.DBPath) == "" {
		check("CRM_DB_PATH", varErrorf("CRM_DB_PATH", "must not be blank"))
	}
	c.checkDatabase(check)
	c.checkObserve(check)
	if !failed["LOG_LEVEL"] {
		if err := c.level.UnmarshalText([]byte(strings.TrimSpace(c.LogLevel))); err != nil || strings.ContainsAny(c.LogLevel, "+-") {
			// slog also takes "info+2"; keep the contract to four words.
			check("LOG_LEVEL", varErrorf("LOG_LEVEL", "%q is not a level: want debug, info, warn or error", truncate(c.LogLevel)))
		}
	}
	c.LogFormat = strings.ToLower(strings.TrimSpace(c.LogFormat))
	if c.LogFormat != "json" && c.LogFormat != "text" {
		check("LOG_FORMAT", varErrorf("LOG_FORMAT", "%q is not a format: want json or text", truncate(c.LogFormat)))
	}

	// The libraries' own checks, last, so that a variable the binary has
	// already refused is not reported twice.
	library := []error{c.resourceServerConfig(nil).Validate()}
	if c.stepUpOn() {
		library = append(library, c.stepUpConfig(nil).Validate())
	}
	for _, err := range library {
		for _, e := range leafErrors(nameFields(err)) {
			var v *varError
			if !errors.As(e, &v) || !failed[v.name] {
				errs = append(errs, e)
			}
		}
	}

	c.unknown = unknownVariables(environ)
	for _, name := range slices.Sorted(maps.Keys(environ)) {
		if why, ok := retiredVariables[name]; ok {
			c.warnings = append(c.warnings, name+" is set but no longer read: "+why+"; remove it")
		}
	}
	// In the order of the README's table, whatever found them.
	known := knownVariables()
	position := func(err error) int {
		var v *varError
		if errors.As(err, &v) {
			if i := slices.Index(known, v.name); i >= 0 {
				return i
			}
		}
		return len(known)
	}
	slices.SortStableFunc(errs, func(a, b error) int { return cmp.Compare(position(a), position(b)) })
	return c, errors.Join(errs...)
}

// libraryVars names the variable behind each field of resourceserver.Config
// and stepup.Config that the binary sets, with indices dropped
// ("Issuers[1].URL" is "Issuers.URL"): the binary's half of the libraries'
// validation.
var libraryVars = map[string]string{
	"resourceserver.Resource":                 "MCP_RESOURCE_URL",
	"resourceserver.Issuers":                  "DUO_ISSUER",
	"resourceserver.Issuers.URL":              "DUO_ISSUER",
	"resourceserver.Issuers.JWKSURL":          "DUO_JWKS_URL",
	"resourceserver.Issuers.IntrospectionURL": "DUO_INTROSPECTION_URL",
	"resourceserver.Issuers.ClientID":         "DUO_CLIENT_ID",
	"resourceserver.Issuers.ClientSecret":     "DUO_CLIENT_SECRET",
	"resourceserver.ExtraAudiences":           "DUO_AUDIENCES",
	"resourceserver.ScopesSupported":          "MCP_SCOPES_SUPPORTED",
	"resourceserver.ResourceDocumentation":    "MCP_RESOURCE_DOCUMENTATION",
	"resourceserver.AllowedOrigins":           "MCP_ALLOWED_ORIGINS",
	"resourceserver.Mode":                     "AUTH_MODE",
	"resourceserver.Leeway":                   "AUTH_LEEWAY",
	"resourceserver.CacheTTL":                 "AUTH_CACHE_TTL",
	"resourceserver.IntrospectionCacheTTL":    "AUTH_INTROSPECTION_CACHE_TTL",

	"stepup.IKey":         "DUO_AUTH_IKEY",
	"stepup.SKey":         "DUO_AUTH_SKEY",
	"stepup.Host":         "DUO_AUTH_HOST",
	"stepup.CACertPEM":    "DUO_AUTH_CA_FILE",
	"stepup.Timeout":      "STEPUP_TIMEOUT",
	"stepup.GrantTTL":     "STEPUP_GRANT_TTL",
	"stepup.MaxPushes":    "STEPUP_MAX_PUSHES",
	"stepup.DenyCooldown": "STEPUP_DENY_COOLDOWN",
}

// stepUpOffHint follows a missing Duo Auth API credential.
const stepUpOffHint = " (or set STEPUP_MODE=off to run without step-up, which is not recommended)"

// nameFields rewrites the libraries' *FieldError values in err into
// errors that name the variable (errors.As, never the message text);
// other errors pass through.
func nameFields(err error) error {
	var out []error
	seen := map[string]bool{} // one field set from one variable on every issuer fails once per issuer
	for _, e := range leafErrors(err) {
		var rf *resourceserver.FieldError
		var sf *stepup.FieldError
		var key, msg string
		switch {
		case errors.As(e, &rf):
			key, msg = "resourceserver."+rf.Field, rf.Err.Error()
		case errors.As(e, &sf):
			key, msg = "stepup."+sf.Field, sf.Err.Error()
			if sf.Field == "IKey" || sf.Field == "SKey" || sf.Field == "Host" {
				msg += stepUpOffHint
			}
		default:
			out = append(out, e)
			continue
		}
		key = fieldIndex.ReplaceAllString(key, "")
		name, ok := libraryVars[key]
		if !ok {
			name = key // a field the binary does not set: a bug, but still say which
		}
		if ve := varErrorf(name, "%s", msg); !seen[ve.Error()] {
			seen[ve.Error()] = true
			out = append(out, ve)
		}
	}
	return errors.Join(out...)
}

var fieldIndex = regexp.MustCompile(`\[[0-9]+\]`)

// describeEnvError rewrites an error of env/v11 so that it names the
// variable (its ParseError names the Go field instead) and says what is
// wanted. Values are quoted only for variables that hold no secret.
func describeEnvError(err error, environ map[string]string) error {
	var notSet env.VarIsNotSetError
	var empty env.EmptyVarError
	var parse env.ParseError
	switch {
	case errors.As(err, &notSet):
		return varErrorf(notSet.Key, "required but not set%s", requiredHint(notSet.Key))
	case errors.As(err, &empty):
		return varErrorf(empty.Key, "required but empty%s", requiredHint(empty.Key))
	case errors.As(err, &parse):
		name := envName(parse.Name)
		if name == "" {
			return err
		}
		value := truncate(environ[name])
		if isSecretVar(name) {
			value = "(hidden)"
		} else {
			value = strconv.Quote(value)
		}
		switch parse.Type {
		case reflect.TypeFor[bool]():
			return varErrorf(name, "%s is not a boolean: want true or false", value)
		case reflect.TypeFor[time.Duration]():
			return varErrorf(name, "%s is not a duration: want Go syntax such as 30s, 5m or 1h", value)
		}
		return varErrorf(name, "%s could not be read as %s", value, parse.Type)
	}
	return err
}

func requiredHint(name string) string {
	switch name {
	case "MCP_RESOURCE_URL":
		return ": the canonical URL of the MCP endpoint, e.g. https://crm.example.com/mcp"
	case "DUO_ISSUER":
		return ": the issuer URL of the Duo OAuth application, e.g. https://sso-xxxx.sso.duosecurity.com/oauth2/DIXXXXXXXX"
	}
	return ""
}

// envName returns the variable read into the config field named field.
func envName(field string) string {
	f, ok := reflect.TypeFor[config]().FieldByName(field)
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return name
}

// knownVariables lists every variable config reads, in declaration order.
func knownVariables() []string {
	var names []string
	for _, f := range reflect.VisibleFields(reflect.TypeFor[config]()) {
		if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); name != "" {
			names = append(names, name)
		}
	}
	return names
}

func isSecretVar(name string) bool {
	f, ok := reflect.TypeFor[config]().FieldByNameFunc(func(field string) bool { return envName(field) == name })
	return ok && f.Type == reflect.TypeFor[secret]()
}

func unknownVariables(environ map[string]string) []string {
	known := knownVariables()
	var out []string
	for name := range environ {
		for _, p := range envPrefixes {
			if _, retired := retiredVariables[name]; strings.HasPrefix(name, p) && !slices.Contains(known, name) && !retired {
				out = append(out, name)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// leafErrors flattens joined errors (errors.Join, env's AggregateError)
// into their parts.
func leafErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, inner := range j.Unwrap() {
			out = append(out, leafErrors(inner)...)
		}
		return out
	}
	return []error{err}
}

// cleanList trims the entries of a comma list and drops empty ones, so
// "a, b," means [a b].
func cleanList(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr) // any host net.Listen accepts: a name, an IP or none
	if err != nil {
		return varErrorf("MCP_LISTEN_ADDR", "%q is not host:port (e.g. 127.0.0.1:8080, or :8080 for every interface)", truncate(addr))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return varErrorf("MCP_LISTEN_ADDR", "%q has no valid port number", truncate(addr))
	}
	return nil
}

// mcpPath returns the path of MCP_RESOURCE_URL, where MCP is served. The
// URL itself is resourceserver's to judge; the path must be one the mux
// serves exactly, and not one the binary serves itself.
func mcpPath(s string) (string, error) {
	const name = "MCP_RESOURCE_URL"
	u, err := url.Parse(s)
	if err != nil {
		return "", nil // resourceserver says what is wrong with it
	}
	path := cmp.Or(u.Path, "/")
	// Patterns of http.ServeMux treat '{' and '}' specially, and it
	// redirects unclean paths; keep to characters that mean themselves.
	for _, r := range path {
		if !(r == '/' || r == '-' || r == '.' || r == '_' || r == '~' ||
			'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return "", varErrorf(name, "path %q may only contain letters, digits and - . _ ~ /", truncate(path))
		}
	}
	if u.RawPath != "" || strings.Contains(path, "//") || slices.ContainsFunc(strings.Split(path, "/"), func(seg string) bool { return seg == "." || seg == ".." }) {
		return "", varErrorf(name, "path %q is not clean (no //, . or .. segments)", truncate(path))
	}
	if slices.Contains(reservedPaths, strings.TrimSuffix(path, "/")) || strings.HasPrefix(path, "/.well-known/") {
		return "", varErrorf(name, "path %q is taken by the server itself (/healthz, /readyz, /.well-known/...)", truncate(path))
	}
	return path, nil
}

// truncate keeps error messages readable when a value is huge.
func truncate(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// resourceServerConfig is the front door's configuration. The client
// credentials and introspection URL apply to every issuer (loadConfig
// allows an introspection URL only when there is one).
func (c config) resourceServerConfig(logger *slog.Logger) resourceserver.Config {
	issuers := make([]resourceserver.Issuer, len(c.Issuers))
	for i, u := range c.Issuers {
		issuers[i] = resourceserver.Issuer{URL: u, JWKSURL: c.JWKSURL}
		if c.mode != resourceserver.ModeJWT {
			issuers[i].IntrospectionURL = c.IntrospectionURL
			issuers[i].ClientID = c.ClientID
			issuers[i].ClientSecret = c.ClientSecret.reveal()
		}
	}
	return resourceserver.Config{
		Resource:              c.ResourceURL,
		Issuers:               issuers,
		ExtraAudiences:        c.Audiences,
		ScopesSupported:       c.ScopesSupported,
		ResourceName:          c.ResourceName,
		ResourceDocumentation: c.ResourceDocumentation,
		AllowedOrigins:        c.AllowedOrigins,
		Mode:                  c.mode,
		Leeway:                c.Leeway,
		CacheTTL:              c.CacheTTL,
		IntrospectionCacheTTL: c.IntrospectionCacheTTL,
		Logger:                logger,
	}
}

// logAttrs is the effective configuration for the start-up log line:
// every value except secrets, which show as set or unset.
func (c config) logAttrs() []any {
	attrs := []any{
		"MCP_LISTEN_ADDR", c.ListenAddr,
		"MCP_RESOURCE_URL", c.ResourceURL,
		"MCP_ALLOWED_ORIGINS", c.AllowedOrigins,
		"MCP_SCOPES_SUPPORTED", c.ScopesSupported,
		"MCP_HIDE_UNAUTHORIZED_TOOLS", c.HideUnauthorizedTools,
		"MCP_RESOURCE_NAME", c.ResourceName,
		"MCP_RESOURCE_DOCUMENTATION", c.ResourceDocumentation,
		"DUO_ISSUER", c.Issuers,
		"DUO_JWKS_URL", orDefault(c.JWKSURL, "discovered"),
		"DUO_AUDIENCES", c.Audiences,
		"AUTH_MODE", string(c.mode),
		"DUO_CLIENT_ID", c.ClientID,
		"DUO_CLIENT_SECRET", c.ClientSecret,
		"DUO_INTROSPECTION_URL", orDefault(c.IntrospectionURL, "discovered"),
		"AUTH_LEEWAY", c.Leeway.String(),
		"AUTH_CACHE_TTL", c.CacheTTL.String(),
		"AUTH_INTROSPECTION_CACHE_TTL", c.IntrospectionCacheTTL.String(),
	}
	attrs = append(attrs, c.limitLogAttrs()...)
	attrs = append(attrs, c.stepUpLogAttrs()...)
	attrs = append(attrs, c.databaseLogAttrs()...)
	attrs = append(attrs, c.observeLogAttrs()...)
	return append(attrs,
		"LOG_LEVEL", c.level.String(),
		"LOG_FORMAT", c.LogFormat,
	)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// newLogger builds the process logger per LOG_LEVEL and LOG_FORMAT.
func (c config) newLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.level}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// formatConfigErrors renders configuration errors one per line, for a
// terminal or a container log.
func formatConfigErrors(err error) string {
	var b strings.Builder
	for _, e := range leafErrors(err) {
		b.WriteString("  ")
		b.WriteString(e.Error())
		b.WriteString("\n")
	}
	return b.String()
}
