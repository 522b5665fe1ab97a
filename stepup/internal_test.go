package stepup

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPushInfoLimits(t *testing.T) {
	long := strings.Repeat("défense ", 2000) // 18,000 bytes, more once escaped
	req := Request{
		Tool:     strings.Repeat("t", 500),
		Reason:   long,
		Summary:  long,
		ClientID: strings.Repeat("c", 1000),
		Key:      "k",
	}
	pi := pushInfo("crm-mcp", req)
	assert.LessOrEqual(t, len(pi), maxPushInfo)
	assert.Greater(t, len(pi), maxPushInfo-20, "the summary should use what is left")

	v, err := url.ParseQuery(pi)
	require.NoError(t, err)
	for _, k := range []string{"tool", "reason", "summary", "client"} {
		assert.True(t, strings.HasSuffix(v.Get(k), "…"), "%s is cut with an ellipsis", k)
		assert.True(t, utf8.ValidString(v.Get(k)), "%s is cut at a character boundary", k)
	}
	assert.Equal(t, "crm-mcp", v.Get("server"))
	assert.LessOrEqual(t, len(url.QueryEscape(v.Get("tool"))), budgetTool)
	assert.LessOrEqual(t, len(url.QueryEscape(v.Get("reason"))), budgetReason)
	assert.True(t, strings.HasPrefix(pi, "tool="), "tool comes first")
}

func TestPushInfoCleansText(t *testing.T) {
	pi := pushInfo("s", Request{Tool: "t", Summary: "line1\nline2\u202eevil\x00\xff", Key: "k"})
	v, err := url.ParseQuery(pi)
	require.NoError(t, err)
	assert.Equal(t, "line1 line2 evil \uFFFD", v.Get("summary"))
	assert.False(t, v.Has("reason"), "empty fields are left out")
	assert.False(t, v.Has("client"))
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{" 10 ", 10 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"soon", 0},
		{"99999999999", 24 * time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, parseRetryAfter(tt.in, now), "%q", tt.in)
	}
}
