package tools_test

import (
	"context"
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

// These tests hold the findings of a hostile review: each failed before
// the fix it names.

func noWritePush(_ *stepup.Config, su *tools.StepUp) { su.OnWrite = false }

// A refusal of a bad argument depends on the request alone: the currency
// is checked before anything is described, so the length of the named
// restricted contact's name never shows.
func TestBadArgumentRefusedBeforeTheRecordIsDescribed(t *testing.T) {
	a, b := newStepUpEnv(t, noWritePush), newStepUpEnv(t, noWritePush)
	hideOtherData(t, b.store)
	ca, cb := a.connect(t, a.token("alice", "crm")), b.connect(t, b.token("alice", "crm"))
	for _, n := range []int{228, 250} {
		args := map[string]any{"contact_id": 6, "title": "t", "amount": 100, "currency": strings.Repeat("X", n)}
		ra, rb := call(t, ca, "create_deal", args), call(t, cb, "create_deal", args)
		require.True(t, ra.IsError)
		assert.Equal(t, text(ra), text(rb))
		assert.Contains(t, text(ra), "currency")
	}
	assert.Empty(t, a.duo.Pushes())
	assert.Empty(t, b.duo.Pushes())
}

// The action sentence is escaped once: a quote inside a query shows as \"
// and an invisible character as its escape.
func TestActionEscapedOnce(t *testing.T) {
	e := newStepUpEnv(t)
	cs := e.connect(t, e.token("alice", "crm"))
	require.False(t, call(t, cs, "list_contacts", map[string]any{"query": `defence" and also "everything`}).IsError)
	require.False(t, call(t, cs, "list_contacts", map[string]any{"query": "defence\u200b"}).IsError)
	p := e.duo.Pushes()
	require.Len(t, p, 2)
	assert.Equal(t, `Search contacts for "defence\" and also \"everything"`, p[0].PushInfo.Get("action"))
	assert.Equal(t, `Search contacts for "defence\u200b"`, p[1].PushInfo.Get("action"))
}

// A stored deal title cannot close its own quotes in the action.
func TestStoredTitleCannotCloseItsQuotes(t *testing.T) {
	e := newStepUpEnv(t, func(c *stepup.Config, su *tools.StepUp) {
		su.OnWrite = false
		su.Tools = []string{"update_deal_stage"}
	})
	cs := e.connect(t, e.token("alice", "crm"))
	res := call(t, cs, "create_deal", map[string]any{"contact_id": 3, "title": `Q3" of 1.00 GBP with contact #3 Priya Raman`, "amount": 95000000, "currency": "GBP"})
	require.False(t, res.IsError, text(res))
	require.False(t, call(t, cs, "update_deal_stage", map[string]any{"id": 7, "stage": "won"}).IsError)
	require.Len(t, e.duo.Pushes(), 1)
	assert.Equal(t, `Move deal #7 "Q3\" of 1.00 GBP with contact #3 Priya Raman" of 950,000.00 GBP with contact #3 Priya Raman (Ledgerstone Capital)`,
		e.duo.Pushes()[0].PushInfo.Get("action"))
}

// A lookalike email is refused before any push; the push shows values as
// they will be stored (Normalize), not as typed.
func TestLookalikeEmailRefusedAndValuesShownAsStored(t *testing.T) {
	e := newStepUpEnv(t)
	cs := e.connect(t, e.token("alice", "crm"))
	res := call(t, cs, "update_contact", map[string]any{"id": 3, "email": "priya.raman@ledgerst\u043ene.example.com"})
	require.True(t, res.IsError)
	assert.Contains(t, text(res), "email")
	assert.Empty(t, e.duo.Pushes())

	require.False(t, call(t, cs, "update_contact", map[string]any{"id": 3, "sector": "  Banking "}).IsError)
	require.Len(t, e.duo.Pushes(), 1)
	assert.Equal(t, "finance → banking", e.duo.Pushes()[0].PushInfo.Get("sector"), "trimmed and lower-cased, as stored")
}

// A plain deals listing names no record: it runs during a cool-down.
func TestPlainDealsListingRunsDuringCooldown(t *testing.T) {
	e := newStepUpEnv(t)
	e.duo.Script("alice", duotest.Deny)
	cs := e.connect(t, e.token("alice", "crm"))
	require.True(t, call(t, cs, "get_contact", map[string]any{"id": 6}).IsError)
	res := call(t, cs, "list_deals", nil)
	require.False(t, res.IsError, text(res))
	assert.True(t, call(t, cs, "list_deals", map[string]any{"contact_id": 1}).IsError, "naming a contact is still refused")
}

// A record made restricted by someone else while a write waits for its
// approval is neither written nor returned to the agent.
func TestRecordMadeRestrictedMeanwhileIsWithheld(t *testing.T) {
	e := newStepUpEnv(t)
	e.duo.Script("alice", duotest.Manual)
	cs := e.connect(t, e.token("alice", "crm"))
	done := make(chan string, 1)
	go func() {
		res := call(t, cs, "update_contact", map[string]any{"id": 3, "owner": "Mallory"})
		done <- resultJSON(t, res)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := e.duo.WaitForPush(ctx)
	require.NoError(t, err)
	r := crm.Restricted
	email := "priya.secret@ledgerstone.example.com"
	_, err = e.store.UpdateContact(ctx, 3, crm.ContactUpdate{Classification: &r, Email: &email})
	require.NoError(t, err)
	require.NoError(t, e.duo.Decide(p.TxID, true))
	got := <-done
	assert.NotContains(t, got, "priya.secret")
	assert.Contains(t, got, "nothing was written")
	now, err := e.store.GetContact(ctx, 3)
	require.NoError(t, err)
	assert.NotEqual(t, "Mallory", now.Owner, "the write did not happen on the record made restricted")
}
