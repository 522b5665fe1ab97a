package resourceserver

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCanonicalAudience(t *testing.T) {
	const resource = "https://crm.example.com/mcp"
	s := &Server{resourceCanon: canonicalAudience(resource), extraAud: map[string]bool{"duo-rp-123": true}}
	tests := []struct {
		aud  string
		want bool
	}{
		{"https://crm.example.com/mcp", true},
		{"HTTPS://CRM.Example.COM/mcp", true},
		{"https://crm.example.com/MCP", false}, // path is case-sensitive
		{"https://crm.example.com/mcp/", false},
		{"https://crm.example.com/mcp?x=1", false},
		{"https://crm.example.com:443/mcp", false}, // default port not folded
		{"http://crm.example.com/mcp", false},
		{"https://crm.example.com/mcpx", false},
		{"https://crm.example.com", false},
		{"https://evil.example.com/mcp", false},
		{"crm.example.com/mcp", false},
		{"duo-rp-123", true},
		{"DUO-RP-123", false}, // extra audiences match exactly
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.aud, func(t *testing.T) {
			assert.Equal(t, tt.want, s.audienceOK([]string{tt.aud}), "aud %q", tt.aud)
		})
	}

	root := &Server{resourceCanon: canonicalAudience("https://crm.example.com")}
	assert.True(t, root.audienceOK([]string{"https://crm.example.com/"}), "empty path equals /")
	assert.True(t, root.audienceOK([]string{"https://CRM.example.com"}))
	assert.False(t, root.audienceOK([]string{"https://crm.example.com/mcp"}))
}

func TestHasScope(t *testing.T) {
	tests := []struct {
		granted  []string
		required string
		want     bool
	}{
		{[]string{"crm.contacts.read"}, "crm.contacts.read", true},
		{[]string{"crm"}, "crm.contacts.read", true},
		{[]string{"crm.contacts"}, "crm.contacts.write", true},
		{[]string{"crm.contacts"}, "crm.deals.read", false},
		{[]string{"crm.con"}, "crm.contacts.read", false},
		{[]string{"crm.contacts.read"}, "crm.contacts", false},
		{[]string{"crm.contacts.read"}, "crm.contacts.write", false},
		{nil, "crm.contacts.read", false},
		{[]string{""}, "crm", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, HasScope(tt.granted, tt.required), "HasScope(%q, %q)", tt.granted, tt.required)
	}
}

func TestParseScopes(t *testing.T) {
	tests := []struct {
		name   string
		claims map[string]any
		want   []string
		ok     bool
	}{
		{"scope string", map[string]any{"scope": "a b  c"}, []string{"a", "b", "c"}, true},
		{"scp array", map[string]any{"scp": []any{"a", "b"}}, []string{"a", "b"}, true},
		{"scp string", map[string]any{"scp": "a b"}, []string{"a", "b"}, true},
		{"scope wins", map[string]any{"scope": "a", "scp": []any{"b"}}, []string{"a"}, true},
		{"none", map[string]any{}, nil, true},
		{"scope not string", map[string]any{"scope": []any{"a"}}, nil, false},
		{"scp with number", map[string]any{"scp": []any{"a", 1.0}}, nil, false},
		{"scp with space", map[string]any{"scp": []any{"a b"}}, nil, false},
		{"scp object", map[string]any{"scp": map[string]any{}}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseScopes(tt.claims)
			assert.Equal(t, tt.ok, ok)
			if tt.ok {
				assert.Equal(t, tt.want, got)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		query   string
		want    string
		wantErr string // "none", "request" or ""
	}{
		{"ok", []string{"Bearer abc.def.ghi"}, "", "abc.def.ghi", ""},
		{"lower-case scheme", []string{"bearer abc"}, "", "abc", ""},
		{"two spaces", []string{"Bearer  abc"}, "", "abc", ""},
		{"padding", []string{"Bearer abc=="}, "", "abc==", ""},
		{"missing", nil, "", "", "none"},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, "", "", "none"},
		{"two headers", []string{"Bearer a", "Bearer b"}, "", "", "request"},
		{"no token", []string{"Bearer"}, "", "", "request"},
		{"empty token", []string{"Bearer "}, "", "", "request"},
		{"two tokens", []string{"Bearer a b"}, "", "", "request"},
		{"comma list", []string{"Bearer a, Bearer b"}, "", "", "request"},
		{"bad char", []string{"Bearer a\"b"}, "", "", "request"},
		{"padding inside", []string{"Bearer a=b"}, "", "", "request"},
		{"query token", []string{"Bearer abc"}, "access_token=abc", "", "request"},
		{"query only", nil, "access_token=abc", "", "request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/mcp?"+tt.query, nil)
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			got, err := bearerToken(r)
			switch tt.wantErr {
			case "":
				require.NoError(t, err)
				assert.Equal(t, tt.want, got)
			case "none":
				assert.ErrorIs(t, err, errNoCredentials)
			case "request":
				var re *requestError
				assert.ErrorAs(t, err, &re)
			}
		})
	}
}

func TestSafeDescription(t *testing.T) {
	assert.Equal(t, "say hi", safeDescription("say \"hi\"\n\\"))
	assert.Equal(t, "ok", safeDescription("ok\u00e9"))
}

func TestTokenCacheBoundsAndExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := newTokenCache(3)
	tok := &Token{Subject: "u"}
	for i, raw := range []string{"t1", "t2", "t3", "t4", "t5"} {
		c.put(raw, tok, now.Add(time.Duration(i+1)*time.Minute), now)
		assert.LessOrEqual(t, c.len(), 3)
	}
	assert.NotNil(t, c.get("t5", now), "the newest entry is present")
	c.put("short", tok, now.Add(time.Second), now)
	assert.NotNil(t, c.get("short", now))
	assert.Nil(t, c.get("short", now.Add(time.Second)), "an entry dies at its deadline")
	assert.Nil(t, c.get("never", now))
}

func TestNumericDate(t *testing.T) {
	got, ok := numericDate(1.5e9)
	assert.True(t, ok)
	assert.Equal(t, int64(1_500_000_000), got.Unix())
	for _, bad := range []any{"1500000000", nil, -1.0, 1e300, true} {
		_, ok := numericDate(bad)
		assert.False(t, ok, "%v", bad)
	}
}

func TestDiscoveryURLs(t *testing.T) {
	assert.Equal(t, []string{
		"https://sso-x.sso.duosecurity.com/.well-known/oauth-authorization-server/oauth2/DIABC",
		"https://sso-x.sso.duosecurity.com/oauth2/DIABC/.well-known/openid-configuration",
	}, discoveryURLs("https://sso-x.sso.duosecurity.com/oauth2/DIABC"))
	assert.Equal(t, []string{
		"https://as.example.com/.well-known/oauth-authorization-server",
		"https://as.example.com/.well-known/openid-configuration",
	}, discoveryURLs("https://as.example.com"))
}
