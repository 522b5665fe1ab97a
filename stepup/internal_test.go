package stepup

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPushInfoRows(t *testing.T) {
	pi, err := pushInfo("crm-mcp", Request{
		Tool:   "update_contact",
		Action: "Update contact #3 Priya Raman (Ledgerstone Capital)",
		Details: []Detail{
			{Key: "email", Old: "priya@ledgerstone.example", HasOld: true, New: "priya.raman@newmail.example"},
			{Key: "phone", Old: "+44 20 7946 0000", HasOld: true, New: ""},
		},
		Reason:   "the call changes CRM data",
		ClientID: "https://agent.example/client.json",
		Key:      "k",
	})
	require.NoError(t, err)
	assert.Equal(t, "action=Update+contact+%233+Priya+Raman+%28Ledgerstone+Capital%29"+
		"&email=priya%40ledgerstone.example+%E2%86%92+priya.raman%40newmail.example"+
		"&phone=%2B44+20+7946+0000+%E2%86%92+%28empty%29"+
		"&reason=the+call+changes+CRM+data&client=agent.example&server=crm-mcp", pi)
}

func TestPushInfoShowsEverythingOrRefuses(t *testing.T) {
	blank := strings.Repeat("\u2800", 150)
	base := func(d ...Detail) Request {
		return Request{User: "u", Tool: "update_contact", Action: "Update contact #3", Details: d, Reason: "r", Key: "k"}
	}

	// The attack of the review: a company padded with invisible characters
	// to push the email off the screen. Written out, it no longer fits.
	_, err := pushInfo("s", base(Detail{Key: "company", New: "Acme" + blank}, Detail{Key: "email", New: "evil@attacker.example"}))
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, Unshowable, e.Outcome)
	assert.Equal(t, "company", e.Field)
	assert.Contains(t, e.Msg, "company is too long")

	// A few invisible characters fit, written out where the approver sees them.
	pi, err := pushInfo("s", base(Detail{Key: "company", New: "Acme\u2800\u200b\u202e"}, Detail{Key: "email", New: "evil@attacker.example"}))
	require.NoError(t, err)
	v, err := url.ParseQuery(pi)
	require.NoError(t, err)
	assert.Equal(t, `Acme\u2800\u200b\u202e`, v.Get("company"))
	assert.Equal(t, "evil@attacker.example", v.Get("email"))

	// An old value is context: cut, never a reason to refuse.
	pi, err = pushInfo("s", base(Detail{Key: "company", Old: strings.Repeat("x", 500), HasOld: true, New: "Acme"}))
	require.NoError(t, err)
	v, _ = url.ParseQuery(pi)
	assert.Equal(t, strings.Repeat("x", maxOldChars-1)+"… → Acme", v.Get("company"))

	// Too many rows for pushinfo: refused as a whole, whatever the old
	// values hold (the check counts each at its full budget).
	var many []Detail
	for i := range 20 {
		many = append(many, Detail{Key: "f" + strconv.Itoa(i), HasOld: true, New: strings.Repeat("é", MaxValueChars)})
	}
	_, err = pushInfo("s", base(many...))
	require.ErrorAs(t, err, &e)
	assert.Equal(t, Unshowable, e.Outcome)
	assert.Empty(t, e.Field)
	_, err2 := pushInfo("s", base(append([]Detail{{Key: "x", Old: strings.Repeat("é", 500), HasOld: true}}, many[1:]...)...))
	assert.Equal(t, err == nil, err2 == nil, "the refusal must not depend on old values")

	// The action sentence is the tool's: built from Display and Quote, and
	// bounded. Anything else is a bug, refused before a push.
	for _, bad := range []string{strings.Repeat("a", MaxActionChars+1), "Show contact \u202e#3", "Show \xff"} {
		_, err = pushInfo("s", Request{Tool: "t", Action: bad})
		require.ErrorAs(t, err, &e, "%q", bad)
		assert.Equal(t, Misconfigured, e.Outcome)
	}
	pi, err = pushInfo("s", Request{Action: "Search contacts for " + Quote("a\"b\u2800")})
	require.NoError(t, err)
	v, _ = url.ParseQuery(pi)
	assert.Equal(t, `Search contacts for "a\"b\u2800"`, v.Get("action"))
}

// TestPushInfoSizeIgnoresStoredText: whether rows fit depends on the new
// values alone. The action (which names a stored record) and the old values
// count at their full budgets, so no stored text moves the line.
func TestPushInfoSizeIgnoresStoredText(t *testing.T) {
	for _, n := range []int{0, 1, 4, 5, 6, 10} {
		var ds []Detail
		for i := range n {
			ds = append(ds, Detail{Key: "f" + strconv.Itoa(i), HasOld: true, New: strings.Repeat("\U0001F600", MaxValueChars)})
		}
		var first error
		for i, action := range []string{"a", strings.Repeat("a", MaxActionChars), strings.Repeat("\U0001F600", MaxActionChars)} {
			for j, old := range []string{"", "x", strings.Repeat("\U0001F600", 500)} {
				for k := range ds {
					ds[k].Old = old
				}
				_, err := pushInfo("s", Request{Tool: "t", Action: action, Details: ds})
				if i == 0 && j == 0 {
					first = err
					continue
				}
				assert.Equal(t, first == nil, err == nil, "%d rows: action %d, old %d", n, i, j)
			}
		}
	}
}

func TestDisplay(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Priya Raman", "Priya Raman"},
		{"Zoë Ørsted 李", "Zoë Ørsted 李"},
		{"line1\nline2", `line1\u000aline2`},
		{"a\u202eevil", `a\u202eevil`},
		{"pad\u2800\u3164\u115f", `pad\u2800\u3164\u115f`},
		{"zero\u200bwidth\ufeff", `zero\u200bwidth\ufeff`},
		{"nbsp\u00a0x", `nbsp\u00a0x`},
		{"tag\U000e0041", `tag\U000e0041`},
		{"vs\ufe0f", `vs\ufe0f`},
		{`back\slash \u2800`, `back\\slash \\u2800`},
		{"bad\xff", `bad\xff`},
		{"a → b ⟶ c ➝ d", `a \u2192 b \u27f6 c \u279d d`},
		{"e\u0301\u0302\u0303\u0304", "e\u0301\u0302" + `\u0303\u0304`},
		{"x\u20dd", `x\u20dd`},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, Display(tt.in), "%q", tt.in)
	}
}

func TestClientLabel(t *testing.T) {
	assert.Equal(t, "agent.example", ClientLabel("https://agent.example/client.json"))
	assert.Equal(t, "127.0.0.1:9000", ClientLabel("http://127.0.0.1:9000/cimd"))
	assert.Equal(t, "registered app raT3opbC…", ClientLabel("raT3opbCIqn7a3fPv7Eyew"))
	assert.Equal(t, "registered app abc", ClientLabel("abc"))
	assert.Equal(t, "", ClientLabel(""))
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

// TestPushInfoRowKeys: a row's name is the tool's argument's, which a
// client may have chosen. It cannot add a second action, reason, client
// or server row (in any case or spacing), repeat another row's name, lay
// out the screen with invisible characters or arrows, or run long.
func TestPushInfoRowKeys(t *testing.T) {
	req := func(d ...Detail) Request {
		return Request{User: "u", Tool: "t", Action: "Call t", Details: d, Reason: "r", ClientID: "https://a.example/c", Key: "k"}
	}
	for _, key := range []string{"action", "reason", "client", "server", "Server", " action ", "SERVER\u0020"} {
		_, err := pushInfo("crm-mcp", req(Detail{Key: key, New: "crm.bank.example (trusted)"}))
		var e *Error
		require.ErrorAs(t, err, &e, "key %q", key)
		assert.Equal(t, Unshowable, e.Outcome, "key %q", key)
	}
	_, err := pushInfo("s", req(Detail{Key: "path", New: "a"}, Detail{Key: "Path", New: "b"}))
	require.Error(t, err, "two rows that read the same")

	_, err = pushInfo("s", req(Detail{Key: strings.Repeat("K", 5000), New: "1"}))
	require.Error(t, err)
	assert.Less(t, len(err.Error()), 300, "the refusal does not repeat the name")
	_, err = pushInfo("s", req(Detail{Key: strings.Repeat("K", MaxKeyChars), New: "1"}))
	require.NoError(t, err)

	pi, err := pushInfo("s", req(Detail{Key: "x\u202eevil\u202c", New: "1"}, Detail{Key: "new\nline", New: "v"}, Detail{Key: "\u2192 a", New: "b"}))
	require.NoError(t, err)
	v, err := url.ParseQuery(pi)
	require.NoError(t, err)
	for _, k := range []string{`x\u202eevil\u202c`, `new\u000aline`, `\u2192 a`} {
		assert.Contains(t, v, k, "the key is shown escaped")
	}
	for k := range v {
		assert.Negative(t, strings.IndexFunc(k, hidden), "no key reaches Duo raw: %q", k)
	}
}
