package tools_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
	"github.com/crm-mcp/crm-mcp/tools"
)

// These tests hold "writes are writes" (issue 16): a write that sets
// nothing is refused from the request alone, a write answers with what it
// changed and the label the approver saw, and a write whose push depended
// on a contact's classification happens only while it still holds.

// An update that sets no field is refused before any push and before any
// record is read: the same words for a restricted contact, an ordinary one
// and an id that names none, and no write on record.
func TestEmptyUpdateRefusedBeforeAnyPush(t *testing.T) {
	rec := &auditRecorder{}
	e := newStepUpEnvConfig(t, func(c *tools.Config) { c.Record = toAudit(rec.record) })
	cs := e.connect(t, e.token("alice", "crm"))
	var first string
	for _, id := range []int{6, 1, 999} {
		res := call(t, cs, "update_contact", map[string]any{"id": id})
		require.True(t, res.IsError, "update_contact {id:%d} ran: %s", id, text(res))
		got := text(res)
		assert.Contains(t, got, "nothing to change: set at least one of name, email, phone, company, sector, classification, owner")
		assert.NotContains(t, got, "Riley")
		if first == "" {
			first = got
		}
		assert.Equal(t, first, got, "the refusal depends on the request alone")
		assert.Equal(t, []string{"tool.called:invalid"}, kinds(rec.take()), "no write on record for id %d", id)
	}
	assert.Empty(t, e.duo.Pushes(), "no push for a write that changes nothing")
}

// A write answers with the label the approver saw and the fields it set,
// as stored: never the restricted contact's other fields.
func TestWriteAnswersWithWhatItChanged(t *testing.T) {
	tests := []struct {
		name string
		tool string
		args map[string]any
		verb string // the push's action is verb + " " + the answer's label
		want string // the structured answer
	}{
		{"update a restricted contact", "update_contact", map[string]any{"id": 6, "owner": " Mallory Stone "}, "Update",
			`{"updated":"contact #6 Riley Vance (Aegis Defence Systems)","id":6,"changed":{"owner":"Mallory Stone"}}`},
		{"update two fields", "update_contact", map[string]any{"id": 6, "sector": "Defense", "phone": ""}, "Update",
			`{"updated":"contact #6 Riley Vance (Aegis Defence Systems)","id":6,"changed":{"phone":"","sector":"defense"}}`},
		{"restrict a contact", "update_contact", map[string]any{"id": 3, "classification": "Restricted"}, "Update",
			`{"updated":"contact #3 Priya Raman (Ledgerstone Capital)","id":3,"changed":{"classification":"restricted"}}`},
		{"move a restricted contact's deal", "update_deal_stage", map[string]any{"id": 4, "stage": "Won"}, "Move",
			`{"updated":"deal #4 \"Secure communications hardening\" of 220,000.00 GBP with contact #6 Riley Vance (Aegis Defence Systems)","id":4,"changed":{"stage":"won"}}`},
		{"a deal with a restricted contact", "create_deal", map[string]any{"contact_id": 6, "title": " Audit ", "amount": 150, "currency": "GBP"}, "Create",
			`{"created":"a deal of 1.50 GBP for contact #6 Riley Vance (Aegis Defence Systems)","id":7,"changed":{"contact_id":6,"title":"Audit","amount":150,"currency":"GBP","stage":"lead"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStepUpEnv(t)
			cs := e.connect(t, e.token("alice", "crm"))
			res := call(t, cs, tt.tool, tt.args)
			require.False(t, res.IsError, text(res))
			got, err := json.Marshal(res.StructuredContent)
			require.NoError(t, err)
			assert.JSONEq(t, tt.want, string(got))

			var answer struct{ Updated, Created string }
			require.NoError(t, json.Unmarshal(got, &answer))
			pushes := e.duo.Pushes()
			require.Len(t, pushes, 1)
			assert.Equal(t, tt.verb+" "+answer.Updated+answer.Created, pushes[0].PushInfo.Get("action"), "the label the approver saw")

			all := string(got) + text(res)
			for _, unchanged := range []string{"@", "+44", "Alex Kim", "finance", "created_at", "updated_at"} {
				assert.NotContains(t, all, unchanged, "a field the write did not set")
			}
			assert.True(t, strings.HasPrefix(text(res), "Updated "+answer.Updated) || strings.HasPrefix(text(res), "Created "+answer.Created), text(res))
		})
	}
}

// The text of a write says what the structured answer says.
func TestWriteTextMatchesItsAnswer(t *testing.T) {
	e := newStepUpEnv(t)
	cs := e.connect(t, e.token("alice", "crm"))
	res := call(t, cs, "update_contact", map[string]any{"id": 6, "owner": "Mallory", "phone": ""})
	require.False(t, res.IsError, text(res))
	assert.Equal(t, `Updated contact #6 Riley Vance (Aegis Defence Systems): phone "", owner "Mallory".`, text(res))

	res = call(t, cs, "create_contact", map[string]any{"name": "Noor Haddad", "email": "noor@example.com"})
	require.False(t, res.IsError, text(res))
	got, err := json.Marshal(res.StructuredContent)
	require.NoError(t, err)
	assert.JSONEq(t, `{"created":"contact #13 Noor Haddad","id":13,"changed":{"name":"Noor Haddad","email":"noor@example.com","phone":"","company":"","sector":"","classification":"internal","owner":"alice"}}`, string(got))
	assert.Equal(t, `Created contact #13 Noor Haddad: name "Noor Haddad", email "noor@example.com", phone "", company "", sector "", classification "internal", owner "alice".`, text(res))
}

// While one user's push for a deal write waits, another user makes the
// deal's contact restricted: the approval then writes nothing and returns
// nothing of the deal, as update_contact does.
func TestDealWriteRechecksTheContact(t *testing.T) {
	tests := []struct {
		tool string
		args map[string]any
	}{
		{"create_deal", map[string]any{"contact_id": 3, "title": "Side letter", "amount": 100, "currency": "GBP"}},
		{"update_deal_stage", map[string]any{"id": 3, "stage": "won"}},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			e := newStepUpEnv(t)
			e.duo.Script("alice", duotest.Manual)
			cs := e.connect(t, e.token("alice", "crm"))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			before, err := e.store.ListDeals(ctx, crm.DealFilter{IncludeRestricted: true, Limit: crm.MaxLimit})
			require.NoError(t, err)
			done := make(chan string, 1)
			go func() {
				res := call(t, cs, tt.tool, tt.args)
				done <- resultJSON(t, res)
			}()
			p, err := e.duo.WaitForPush(ctx)
			require.NoError(t, err)
			assert.NotContains(t, p.PushInfo.Get("action"), "restricted")
			r := crm.Restricted
			_, err = e.store.UpdateContact(ctx, 3, crm.ContactUpdate{Classification: &r})
			require.NoError(t, err)
			require.NoError(t, e.duo.Decide(p.TxID, true))
			got := <-done
			assert.Contains(t, got, "reclassified while the call waited, so nothing was written")
			assert.NotContains(t, got, "Trading desk")
			assert.NotContains(t, got, "Side letter")
			after, err := e.store.ListDeals(ctx, crm.DealFilter{IncludeRestricted: true, Limit: crm.MaxLimit})
			require.NoError(t, err)
			assert.Equal(t, before, after, "no deal was created or moved")
		})
	}
}

// TestWriteAnswerNeedsTheReadScopes: a write's label holds stored data
// (the deal's title and amount, the contact's name and company). A token
// that may write but not read gets the record named by id only: moving a
// deal to the stage it is already in must not read the deal and its
// contact (a hostile review's finding).
func TestWriteAnswerNeedsTheReadScopes(t *testing.T) {
	e := newStepUpEnv(t, func(_ *stepup.Config, su *tools.StepUp) { su.OnWrite = false })
	writeOnly := e.connect(t, e.token("alice", tools.ScopeDealsWrite, tools.ScopeContactsWrite))
	res := call(t, writeOnly, "update_deal_stage", map[string]any{"id": 1, "stage": "negotiation"})
	require.False(t, res.IsError, text(res))
	for _, leak := range []string{"Analytics platform", "48,000", "Maya", "Brightline"} {
		assert.NotContains(t, text(res)+resultJSON(t, res), leak, "a write-only token read %q", leak)
	}
	assert.Contains(t, resultJSON(t, res), `"updated":"deal #1"`)

	res = call(t, writeOnly, "create_deal", map[string]any{"contact_id": 1, "title": "Renewal", "amount": 100, "currency": "USD"})
	require.False(t, res.IsError, text(res))
	assert.NotContains(t, text(res)+resultJSON(t, res), "Maya")
	assert.Contains(t, resultJSON(t, res), `"created":"a deal of 1.00 USD for contact #1"`)

	res = call(t, writeOnly, "update_contact", map[string]any{"id": 1, "phone": "+1 555 0100"})
	require.False(t, res.IsError, text(res))
	assert.NotContains(t, text(res)+resultJSON(t, res), "Maya")
	assert.Contains(t, resultJSON(t, res), `"updated":"contact #1"`)

	// With the read scopes, the label the push would show.
	all := e.connect(t, e.token("alice", "crm"))
	res = call(t, all, "update_deal_stage", map[string]any{"id": 1, "stage": "negotiation"})
	require.False(t, res.IsError, text(res))
	assert.Contains(t, text(res), "Maya Okafor (Brightline Analytics)")
}
