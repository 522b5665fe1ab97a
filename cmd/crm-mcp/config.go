package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/crm-mcp/crm-mcp/resourceserver"
)

// config is everything the binary can be told. It is read from the
// environment, and only here: the packages it wires take typed values
// (house style). The variable names are a public contract, documented in
// the README; change them only with a migration note.
type config struct {
	ListenAddr            string   `env:"MCP_LISTEN_ADDR" envDefault:"127.0.0.1:8080"`
	ResourceURL           string   `env:"MCP_RESOURCE_URL,required,notEmpty"`
	AllowedOrigins        []string `env:"MCP_ALLOWED_ORIGINS"`
	Stateless             bool     `env:"MCP_STATELESS" envDefault:"false"`
	ScopesSupported       []string `env:"MCP_SCOPES_SUPPORTED" envDefault:"crm.contacts.read"`
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

	SessionSettings
	StepUpSettings

	DBPath    string `env:"CRM_DB_PATH" envDefault:"./data/crm.db"`
	LogLevel  string `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat string `env:"LOG_FORMAT" envDefault:"json"`

	// Derived by loadConfig; env skips unexported fields.
	mode     resourceserver.Mode
	level    slog.Level
	mcpPath  string   // the resource URL's path, where MCP is served
	unknown  []string // variables with our prefixes that nothing reads (typos?)
	warnings []string // accepted but probably not meant
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
var envPrefixes = []string{"MCP_", "DUO_", "AUTH_", "CRM_", "LOG_", "STEPUP_", "SENSITIVE_"}

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
func loadConfig(environ map[string]string) (config, error) {
	if environ == nil {
		// env.Options treats a nil map as "use the process environment".
		environ = map[string]string{}
	}
	var c config
	var errs []error
	failed := map[string]bool{} // variables env could not parse: skip their checks
	if err := env.ParseWithOptions(&c, env.Options{Environment: environ}); err != nil {
		for _, e := range leafErrors(err) {
			ve := describeEnvError(e, environ)
			var v *varError
			if errors.As(ve, &v) {
				failed[v.name] = true
			}
			errs = append(errs, ve)
		}
	}
	c.AllowedOrigins = cleanList(c.AllowedOrigins)
	c.ScopesSupported = cleanList(c.ScopesSupported)
	c.Issuers = cleanList(c.Issuers)
	c.Audiences = cleanList(c.Audiences)
	c.JWKSURL = strings.TrimSpace(c.JWKSURL)
	c.IntrospectionURL = strings.TrimSpace(c.IntrospectionURL)
	c.ClientID = strings.TrimSpace(c.ClientID)

	check := func(name string, err error) {
		if err != nil && !failed[name] {
			errs = append(errs, err)
		}
	}
	check("MCP_LISTEN_ADDR", checkListenAddr(c.ListenAddr))
	if !failed["MCP_RESOURCE_URL"] {
		path, err := checkResourceURL(c.ResourceURL)
		check("MCP_RESOURCE_URL", err)
		c.mcpPath = path
	}
	for _, o := range c.AllowedOrigins {
		check("MCP_ALLOWED_ORIGINS", checkOrigin(o))
	}
	if len(c.ScopesSupported) == 0 && !failed["MCP_SCOPES_SUPPORTED"] {
		check("MCP_SCOPES_SUPPORTED", varErrorf("MCP_SCOPES_SUPPORTED", "lists no scope: clients need at least one to ask for (e.g. crm.contacts.read)"))
	}
	for _, s := range c.ScopesSupported {
		if !validScopeToken(s) {
			check("MCP_SCOPES_SUPPORTED", varErrorf("MCP_SCOPES_SUPPORTED", "%q is not a valid scope (RFC 6749 section 3.3: printable ASCII without spaces, '\"' or '\\')", s))
		}
	}
	if c.ResourceDocumentation != "" {
		check("MCP_RESOURCE_DOCUMENTATION", checkDocURL(c.ResourceDocumentation))
	}

	if !failed["DUO_ISSUER"] {
		if len(c.Issuers) == 0 {
			check("DUO_ISSUER", varErrorf("DUO_ISSUER", "no issuer listed: set it to the issuer URL of the Duo OAuth application, e.g. https://sso-xxxx.sso.duosecurity.com/oauth2/DIXXXXXXXX"))
		}
		seen := map[string]bool{}
		for _, is := range c.Issuers {
			if seen[is] {
				check("DUO_ISSUER", varErrorf("DUO_ISSUER", "%s is listed twice", quoteURL(is)))
			}
			seen[is] = true
			check("DUO_ISSUER", checkServerURL("DUO_ISSUER", is))
		}
	}
	if c.JWKSURL != "" {
		check("DUO_JWKS_URL", checkServerURL("DUO_JWKS_URL", c.JWKSURL))
		if len(c.Issuers) > 1 {
			check("DUO_JWKS_URL", varErrorf("DUO_JWKS_URL", "can only be set with a single DUO_ISSUER (%d are listed): each issuer's keys are discovered from its own metadata", len(c.Issuers)))
		}
	}
	for _, a := range c.Audiences {
		if a == c.ResourceURL {
			c.warnings = append(c.warnings, "DUO_AUDIENCES lists MCP_RESOURCE_URL, which is always accepted")
		}
	}
	if !failed["AUTH_MODE"] {
		m, err := resourceserver.ParseMode(strings.ToLower(strings.TrimSpace(c.AuthMode)))
		if err != nil {
			check("AUTH_MODE", varErrorf("AUTH_MODE", "%q is not a mode: want jwt, introspection or jwt+introspection", truncate(c.AuthMode)))
		}
		c.mode = m
	}
	if c.mode == resourceserver.ModeIntrospection && c.JWKSURL != "" {
		c.warnings = append(c.warnings, "DUO_JWKS_URL is ignored: AUTH_MODE is introspection")
	}
	switch c.mode {
	case resourceserver.ModeIntrospection, resourceserver.ModeJWTIntrospection:
		if c.ClientID == "" {
			check("DUO_CLIENT_ID", varErrorf("DUO_CLIENT_ID", "required when AUTH_MODE is %s: the client id the introspection endpoint authenticates", c.mode))
		}
		if c.ClientSecret == "" {
			check("DUO_CLIENT_SECRET", varErrorf("DUO_CLIENT_SECRET", "required when AUTH_MODE is %s: the client secret the introspection endpoint authenticates", c.mode))
		}
		if c.mode == resourceserver.ModeIntrospection && len(c.Issuers) > 1 {
			check("AUTH_MODE", varErrorf("AUTH_MODE", "introspection supports exactly one DUO_ISSUER (%d are listed): an opaque token does not say which issuer to ask; use jwt+introspection", len(c.Issuers)))
		}
		if c.IntrospectionURL != "" {
			check("DUO_INTROSPECTION_URL", checkServerURL("DUO_INTROSPECTION_URL", c.IntrospectionURL))
			// Sending issuer B's tokens to issuer A's endpoint would hand
			// them to the wrong server; with several issuers, discovery
			// finds each one's own endpoint.
			if len(c.Issuers) > 1 {
				check("DUO_INTROSPECTION_URL", varErrorf("DUO_INTROSPECTION_URL", "can only be set with a single DUO_ISSUER (%d are listed): each issuer's endpoint is discovered from its own metadata", len(c.Issuers)))
			}
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
		// resourceserver reads 0 as "the default", so 0 cannot mean none.
		{"AUTH_LEEWAY", c.Leeway, 5 * time.Minute},
		{"AUTH_CACHE_TTL", c.CacheTTL, 24 * time.Hour},
		{"AUTH_INTROSPECTION_CACHE_TTL", c.IntrospectionCacheTTL, 24 * time.Hour},
	} {
		switch {
		case d.v <= 0:
			check(d.name, varErrorf(d.name, "must be greater than zero, got %s", d.v))
		case d.v > d.max:
			check(d.name, varErrorf(d.name, "must be at most %s, got %s", d.max, d.v))
		}
	}

	c.checkStepUp(check)
	c.checkSessions(check)

	if strings.TrimSpace(c.DBPath) == "" {
		check("CRM_DB_PATH", varErrorf("CRM_DB_PATH", "must not be blank"))
	}
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

	c.unknown = unknownVariables(environ)
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
			if strings.HasPrefix(name, p) && !slices.Contains(known, name) {
				out = append(out, name)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// leafErrors flattens joined and aggregated errors (env's AggregateError,
// errors.Join, and resourceserver's wrapped join) into their parts.
func leafErrors(err error) []error {
	if err == nil {
		return nil
	}
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		var out []error
		for _, inner := range e.Unwrap() {
			out = append(out, leafErrors(inner)...)
		}
		return out
	case interface{ Unwrap() error }:
		inner := e.Unwrap()
		if _, multi := inner.(interface{ Unwrap() []error }); multi {
			return leafErrors(inner)
		}
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

// checkResourceURL validates MCP_RESOURCE_URL as the MCP spec asks of a
// resource identifier (RFC 8707 section 2) and returns the path to serve
// MCP at. It checks what resourceserver checks, so that the message names
// the variable, and more: the path must be one the mux can serve exactly.
func checkResourceURL(s string) (string, error) {
	const name = "MCP_RESOURCE_URL"
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return "", varErrorf(name, "%s is not an absolute URL such as https://crm.example.com/mcp", quoteURL(s))
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return "", varErrorf(name, "%s uses plain HTTP: only https is allowed, except on a loopback host (127.0.0.1, ::1, localhost) for development", quoteURL(s))
		}
	default:
		return "", varErrorf(name, "%s must use https", quoteURL(s))
	}
	if u.User != nil {
		return "", varErrorf(name, "%s must not carry user information", quoteURL(s))
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		return "", varErrorf(name, "%s must not have a query or fragment (RFC 8707 section 2): clients compare it byte for byte", quoteURL(s))
	}
	path := u.Path
	if path == "" {
		path = "/"
	}
	// Patterns of http.ServeMux treat '{' and '}' specially, and it
	// redirects unclean paths; keep to characters that mean themselves.
	for _, r := range path {
		if !(r == '/' || r == '-' || r == '.' || r == '_' || r == '~' ||
			'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return "", varErrorf(name, "path %q may only contain letters, digits and - . _ ~ /", path)
		}
	}
	if u.RawPath != "" || strings.Contains(path, "//") || slices.ContainsFunc(strings.Split(path, "/"), func(seg string) bool { return seg == "." || seg == ".." }) {
		return "", varErrorf(name, "path %q is not clean (no //, . or .. segments)", path)
	}
	if slices.Contains(reservedPaths, strings.TrimSuffix(path, "/")) || strings.HasPrefix(path, "/.well-known/") {
		return "", varErrorf(name, "path %q is taken by the server itself (/healthz, /readyz, /.well-known/...)", path)
	}
	return path, nil
}

// checkServerURL validates the URL of an authorization server endpoint:
// https, or http on a loopback host only (MCP authorization spec,
// "Communication Security").
func checkServerURL(name, s string) error {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return varErrorf(name, "%s is not an absolute URL", quoteURL(s))
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return varErrorf(name, "%s uses plain HTTP: only https is allowed, except on a loopback host for development", quoteURL(s))
		}
	default:
		return varErrorf(name, "%s must use https", quoteURL(s))
	}
	if u.User != nil {
		return varErrorf(name, "%s must not carry user information", quoteURL(s))
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return varErrorf(name, "%s must not have a query or fragment", quoteURL(s))
	}
	return nil
}

func checkOrigin(o string) error {
	u, err := url.Parse(o)
	if o == "*" {
		return varErrorf("MCP_ALLOWED_ORIGINS", `"*" is not allowed: list each browser origin, e.g. http://localhost:6274`)
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return varErrorf("MCP_ALLOWED_ORIGINS", "%s is not an origin: want scheme://host[:port], e.g. https://app.example.com", quoteURL(o))
	}
	return nil
}

func checkDocURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return varErrorf("MCP_RESOURCE_DOCUMENTATION", "%s is not an absolute http(s) URL without user information", quoteURL(s))
	}
	return nil
}

// validScopeToken: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), RFC 6749
// section 3.3.
func validScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// quoteURL quotes a URL for an error message with any password hidden:
// https://user:pass@host would otherwise put a credential in the log.
func quoteURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		s = u.Redacted()
	} else if err != nil && strings.Contains(s, "@") {
		s = "(unparsable URL with '@', not shown)"
	}
	return strconv.Quote(truncate(s))
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

// rsErrorVars maps what resourceserver.New says about a field to the
// variable that sets it. loadConfig checks all of these first, so this is
// a second line: if the library grows a check, its message still names a
// variable.
var rsErrorVars = []struct {
	prefix string
	name   string
}{
	{"resource URL", "MCP_RESOURCE_URL"},
	{"at least one issuer", "DUO_ISSUER"},
	{"JWKS URL", "DUO_JWKS_URL"},
	{"introspection URL", "DUO_INTROSPECTION_URL"},
	{"mode introspection supports", "AUTH_MODE"},
	{"unknown mode", "AUTH_MODE"},
	{"extra audiences", "DUO_AUDIENCES"},
	{"allowed origin", "MCP_ALLOWED_ORIGINS"},
	{"scope", "MCP_SCOPES_SUPPORTED"},
	{"resource documentation", "MCP_RESOURCE_DOCUMENTATION"},
	{"leeway", "AUTH_LEEWAY"},
	{"introspection cache TTL", "AUTH_INTROSPECTION_CACHE_TTL"},
	{"cache TTL", "AUTH_CACHE_TTL"},
	{"issuer", "DUO_ISSUER"}, // last: "issuer %q: mode ... needs a client id" is handled before
}

// describeRSError rewrites an error of resourceserver.New into errors that
// name variables.
func describeRSError(err error) error {
	var out []error
	for _, e := range leafErrors(err) {
		msg := strings.TrimPrefix(e.Error(), "resourceserver: ")
		switch {
		case strings.Contains(msg, "needs a client id and secret"):
			out = append(out, varErrorf("DUO_CLIENT_ID", "%s (set DUO_CLIENT_ID and DUO_CLIENT_SECRET)", msg))
			continue
		}
		name := "configuration"
		for _, m := range rsErrorVars {
			if strings.HasPrefix(msg, m.prefix) {
				name = m.name
				break
			}
		}
		out = append(out, varErrorf(name, "%s", msg))
	}
	return errors.Join(out...)
}

// logAttrs is the effective configuration for the start-up log line:
// every value except secrets, which show as set or unset.
func (c config) logAttrs() []any {
	attrs := []any{
		"MCP_LISTEN_ADDR", c.ListenAddr,
		"MCP_RESOURCE_URL", c.ResourceURL,
		"MCP_ALLOWED_ORIGINS", c.AllowedOrigins,
		"MCP_STATELESS", c.Stateless,
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
	attrs = append(attrs, c.sessionLogAttrs()...)
	attrs = append(attrs, c.stepUpLogAttrs()...)
	return append(attrs,
		"CRM_DB_PATH", c.DBPath,
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
