package main

import (
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/tools"
)

// StepUpSettings is the part of config about Duo Push step-up. It is
// embedded in config, so env reads its fields like the others.
type StepUpSettings struct {
	StepUpMode   string        `env:"STEPUP_MODE" envDefault:"duo"`
	DuoIKey      string        `env:"DUO_AUTH_IKEY"`
	DuoSKey      secret        `env:"DUO_AUTH_SKEY"`
	DuoHost      string        `env:"DUO_AUTH_HOST"`
	DuoCAFile    string        `env:"DUO_AUTH_CA_FILE"`
	UserClaim    string        `env:"DUO_USERNAME_CLAIM" envDefault:"sub"`
	SendUserID   bool          `env:"DUO_SEND_USER_ID" envDefault:"false"`
	Timeout      time.Duration `env:"STEPUP_TIMEOUT" envDefault:"60s"`
	GrantTTL     time.Duration `env:"STEPUP_GRANT_TTL" envDefault:"5m"`
	MaxPushes    int           `env:"STEPUP_MAX_PUSHES" envDefault:"5"`
	DenyCooldown time.Duration `env:"STEPUP_DENY_COOLDOWN" envDefault:"60s"`
	OnWrite      bool          `env:"STEPUP_ON_WRITE" envDefault:"true"`
	Tools        []string      `env:"STEPUP_TOOLS"`
	Terms        []string      `env:"SENSITIVE_QUERY_TERMS" envDefault:"defence,defense,classified,military,intelligence"`

	duoCAPEM []byte // DUO_AUTH_CA_FILE's contents, read by loadConfig
}

// stepUpOn reports whether step-up is enabled (anything but STEPUP_MODE=off).
func (c config) stepUpOn() bool { return c.StepUpMode == "duo" }

// checkStepUp validates the step-up variables; check records a problem
// unless the variable already failed to parse.
func (c *config) checkStepUp(check func(name string, err error)) {
	c.StepUpMode = strings.ToLower(strings.TrimSpace(c.StepUpMode))
	c.Tools = cleanList(c.Tools)
	c.Terms = cleanList(c.Terms)
	c.DuoHost = strings.TrimSpace(c.DuoHost)
	c.DuoIKey = strings.TrimSpace(c.DuoIKey)
	c.UserClaim = strings.TrimSpace(c.UserClaim)
	switch c.StepUpMode {
	case "duo":
	case "off":
		c.warnings = append(c.warnings, "STEPUP_MODE=off: sensitive calls run WITHOUT Duo Push approval")
		return
	default:
		check("STEPUP_MODE", varErrorf("STEPUP_MODE", "%q is not a mode: want duo or off", truncate(c.StepUpMode)))
		return
	}
	// The Duo keys, host and CA certificates are stepup's to judge
	// (loadConfig runs stepup.Config.Validate); the file is ours to read.
	if c.DuoCAFile != "" {
		pem, err := os.ReadFile(c.DuoCAFile)
		if err != nil {
			check("DUO_AUTH_CA_FILE", varErrorf("DUO_AUTH_CA_FILE", "cannot read %q: %v", truncate(c.DuoCAFile), err))
		}
		c.duoCAPEM = pem
	}
	if strings.TrimSpace(c.UserClaim) == "" {
		check("DUO_USERNAME_CLAIM", varErrorf("DUO_USERNAME_CLAIM", "must name a claim of the access token, such as sub or email"))
	}
	for _, d := range []struct {
		name     string
		v        time.Duration
		min, max time.Duration
	}{
		{"STEPUP_TIMEOUT", c.Timeout, time.Second, 5 * time.Minute},
		{"STEPUP_GRANT_TTL", c.GrantTTL, 0, 24 * time.Hour},
		{"STEPUP_DENY_COOLDOWN", c.DenyCooldown, time.Second, 24 * time.Hour},
	} {
		if d.v < d.min || d.v > d.max {
			check(d.name, varErrorf(d.name, "must be between %s and %s, got %s", d.min, d.max, d.v))
		}
	}
	if c.MaxPushes < 1 || c.MaxPushes > 100 {
		check("STEPUP_MAX_PUSHES", varErrorf("STEPUP_MAX_PUSHES", "must be between 1 and 100, got %d", c.MaxPushes))
	}
	// The gateway's tools are in its policy: gateway.go checks them there.
	if known := tools.Names(); c.GatewayPolicy == "" {
		var unknown []string
		for _, t := range c.Tools {
			if !slices.Contains(known, t) {
				unknown = append(unknown, strconv.Quote(truncate(t)))
			}
		}
		if len(unknown) > 0 {
			check("STEPUP_TOOLS", varErrorf("STEPUP_TOOLS", "%s: not a tool; the tools are %s", strings.Join(unknown, ", "), strings.Join(known, ", ")))
		}
	}
	if _, err := stepup.NewTerms(c.Terms); err != nil || len(c.Terms) == 0 {
		check("SENSITIVE_QUERY_TERMS", varErrorf("SENSITIVE_QUERY_TERMS", "must list at least one word, comma-separated"))
	}
}

// stepUp builds the step-up configuration for the tools, or nil when
// STEPUP_MODE=off.
func (c config) stepUp(log *slog.Logger) (*tools.StepUp, error) {
	if !c.stepUpOn() {
		return nil, nil
	}
	guard, err := stepup.New(c.stepUpConfig(log))
	if err != nil {
		return nil, nameFields(err)
	}
	terms, err := stepup.NewTerms(c.Terms)
	if err != nil {
		return nil, varErrorf("SENSITIVE_QUERY_TERMS", "%v", err)
	}
	return &tools.StepUp{Guard: guard, Terms: terms, OnWrite: c.OnWrite, Tools: c.Tools, UsernameClaim: c.UserClaim}, nil
}

// stepUpConfig is the Guard's configuration; log may be nil.
func (c config) stepUpConfig(log *slog.Logger) stepup.Config {
	gcfg := stepup.Config{
		IKey:         c.DuoIKey,
		SKey:         c.DuoSKey.reveal(),
		Host:         c.DuoHost,
		CACertPEM:    c.duoCAPEM,
		ServerName:   "crm-mcp",
		UseUserID:    c.SendUserID,
		Timeout:      c.Timeout,
		GrantTTL:     c.GrantTTL,
		MaxPushes:    c.MaxPushes,
		DenyCooldown: c.DenyCooldown,
		Logger:       log,
		State:        c.stepUpState,
	}
	if c.GrantTTL == 0 {
		gcfg.GrantTTL = stepup.NoGrants // 0 means every call pushes
	}
	return gcfg
}

// stepUpLogAttrs is the step-up part of the start-up log line.
func (c config) stepUpLogAttrs() []any {
	return []any{
		"STEPUP_MODE", c.StepUpMode,
		"DUO_AUTH_IKEY", c.DuoIKey,
		"DUO_AUTH_SKEY", c.DuoSKey,
		"DUO_AUTH_HOST", c.DuoHost,
		"DUO_AUTH_CA_FILE", orDefault(c.DuoCAFile, "Duo's pinned CAs"),
		"DUO_USERNAME_CLAIM", c.UserClaim,
		"DUO_SEND_USER_ID", c.SendUserID,
		"STEPUP_TIMEOUT", c.Timeout.String(),
		"STEPUP_GRANT_TTL", c.GrantTTL.String(),
		"STEPUP_MAX_PUSHES", c.MaxPushes,
		"STEPUP_DENY_COOLDOWN", c.DenyCooldown.String(),
		"STEPUP_ON_WRITE", c.OnWrite,
		"STEPUP_TOOLS", c.Tools,
		"SENSITIVE_QUERY_TERMS", c.Terms,
	}
}
