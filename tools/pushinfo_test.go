package tools_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPushInfoGolden pins what the approver reads for every tool: the
// action sentence naming the record, then one row per field, old → new
// where the call changes a value. One golden file per case, under
// testdata/pushinfo, decoded one row a line after the raw form.
func TestPushInfoGolden(t *testing.T) {
	tests := []struct {
		name string
		tool string
		args map[string]any
		want []string // rows the file must hold, as "key: value"
	}{
		{"get_contact_restricted", "get_contact", map[string]any{"id": 6},
			[]string{"action: Show contact #6 Riley Vance (Aegis Defence Systems)", "reason: the record it names is classified restricted"}},
		{"list_contacts_search", "list_contacts", map[string]any{"query": "defence", "limit": 10},
			[]string{`action: Search contacts for "defence"`, "restricted: included", "limit: 10"}},
		{"list_contacts_include_restricted", "list_contacts", map[string]any{"include_restricted": true},
			[]string{"action: List contacts", "restricted: included", "reason: the call asks for restricted records"}},
		{"list_deals_restricted_contact", "list_deals", map[string]any{"contact_id": 6},
			[]string{"action: List deals of contact #6 Riley Vance (Aegis Defence Systems)"}},
		{"create_contact", "create_contact", map[string]any{"name": "Noor Haddad", "email": "noor@example.com", "company": "Dunmore Freight", "sector": "logistics"},
			[]string{"action: Create a contact", "name: Noor Haddad", "email: noor@example.com", "phone: (empty)", "company: Dunmore Freight", "classification: internal (default)", "owner: you (the signed-in user)"}},
		{"update_contact", "update_contact", map[string]any{"id": 3, "email": "priya.raman@newmail.example", "phone": "+44 20 7946 0000"},
			[]string{"action: Update contact #3 Priya Raman (Ledgerstone Capital)", "email: priya.raman@ledgerstone.example.com → priya.raman@newmail.example", "phone: +44 20 7946 0321 → +44 20 7946 0000"}},
		{"create_deal", "create_deal", map[string]any{"contact_id": 5, "title": "Turbine monitoring", "amount": 1200000, "currency": "EUR"},
			[]string{"action: Create a deal of 12,000.00 EUR for contact #5 Ingrid Solberg (Fjordline Renewables)", "title: Turbine monitoring", "amount: 1200000 (minor units)", "stage: lead (default)"}},
		{"update_deal_stage", "update_deal_stage", map[string]any{"id": 4, "stage": "won"},
			[]string{`action: Move deal #4 "Secure communications hardening" of 220,000.00 GBP with contact #6 Riley Vance (Aegis Defence Systems)`, "stage: proposal → won",
				"reason: the call changes data; the record it names is classified restricted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStepUpEnv(t)
			cs := e.connect(t, e.token("alice", "crm"))
			res := call(t, cs, tt.tool, tt.args)
			require.False(t, res.IsError, text(res))
			pushes := e.duo.Pushes()
			require.Len(t, pushes, 1)
			raw := pushes[0].RawPushInfo
			var rows []string
			for _, pair := range strings.Split(raw, "&") {
				k, v, _ := strings.Cut(pair, "=")
				k, _ = url.QueryUnescape(k)
				v, _ = url.QueryUnescape(v)
				rows = append(rows, k+": "+v)
			}
			for _, w := range tt.want {
				assert.Contains(t, rows, w)
			}
			assert.Equal(t, "server: crm-mcp", rows[len(rows)-1], "server comes last")
			assert.True(t, strings.HasPrefix(rows[0], "action: "), "the action comes first")
			golden(t, "pushinfo/"+tt.name+".txt", raw+"\n\n"+strings.Join(rows, "\n")+"\n")
		})
	}
}

// TestPushRefusedWhenItCannotBeShown: the attack of the review, a company
// padded with invisible characters to push the record and the new email
// off the screen, is refused before any push, naming the argument.
func TestPushRefusedWhenItCannotBeShown(t *testing.T) {
	e := newStepUpEnv(t)
	cs := e.connect(t, e.token("alice", "crm"))
	res := call(t, cs, "update_contact", map[string]any{"id": 3, "company": "Ledgerstone" + strings.Repeat("\u2800", 150), "email": "priya@attacker.example"})
	require.True(t, res.IsError)
	assert.Contains(t, text(res), "company is too long to show on the phone")
	assert.Contains(t, text(res), "no approval was asked for")
	assert.Empty(t, e.duo.Pushes(), "no push")
	got, err := e.store.GetContact(t.Context(), 3)
	require.NoError(t, err)
	assert.Equal(t, "priya.raman@ledgerstone.example.com", got.Email, "nothing changed")

	res = call(t, cs, "list_contacts", map[string]any{"query": strings.Repeat("\u200b", 40) + "defence"})
	require.True(t, res.IsError)
	assert.Contains(t, text(res), "query is too long to show on the phone")
	assert.Empty(t, e.duo.Pushes())

	// A few invisible characters are shown, written out.
	res = call(t, cs, "update_contact", map[string]any{"id": 3, "company": "Ledger\u2800stone\u202e"})
	require.False(t, res.IsError, text(res))
	require.Len(t, e.duo.Pushes(), 1)
	assert.Equal(t, `Ledgerstone Capital → Ledger\u2800stone\u202e`, e.duo.Pushes()[0].PushInfo.Get("company"))
}
