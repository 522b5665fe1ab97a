package tools_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
	"github.com/crm-mcp/crm-mcp/tools"
)

// auditRecorder keeps the events a handler records; fail makes it refuse them.
type auditRecorder struct {
	mu     sync.Mutex
	events []audit.Event
	fail   func(audit.Event) bool
}

func (r *auditRecorder) record(_ context.Context, e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil && r.fail(e) {
		return errors.New("disk full")
	}
	r.events = append(r.events, e)
	return nil
}

func (r *auditRecorder) take() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

func kinds(evs []audit.Event) []string {
	var out []string
	for _, e := range evs {
		k := string(e.Kind)
		if e.Outcome != "" {
			k += ":" + e.Outcome
		}
		if e.Reason != "" && e.Kind != audit.StepUpRequested {
			k += ":" + e.Reason
		}
		out = append(out, k)
	}
	return out
}

// TestDecisionsAreRecordedBeforeTheyAreActedOn: the audit trail hears each
// step of a call in order, with the call's own token and the push's txid,
// and a decision that cannot be recorded is not acted on.
func TestDecisionsAreRecordedBeforeTheyAreActedOn(t *testing.T) {
	rec := &auditRecorder{}
	e := newStepUpEnvConfig(t, func(c *tools.Config) { c.Record = toAudit(rec.record) })
	e2 := e
	cs := e2.connect(t, e2.token("alice", "crm"))

	require.False(t, call(t, cs, "update_contact", map[string]any{"id": 1, "phone": "+1 555 0100"}).IsError)
	evs := rec.take()
	assert.Equal(t, []string{"stepup.requested", "stepup.approved:push", "tool.called:started", "tool.called:ok"}, kinds(evs))
	pushes := e.duo.Pushes()
	require.Len(t, pushes, 1)
	assert.Equal(t, pushes[0].TxID, evs[1].DuoTxID)
	for _, ev := range evs {
		assert.Equal(t, "alice", ev.Subject)
		assert.Equal(t, evs[0].RequestID, ev.RequestID, "one request id for the call")
		assert.Regexp(t, `^sha256:[0-9a-f]{16}$`, ev.TokenFingerprint)
		assert.JSONEq(t, `{"id":1,"phone":"+1 555 0100"}`, string(ev.Args))
	}

	require.False(t, call(t, cs, "list_contacts", nil).IsError)
	assert.Equal(t, []string{"tool.called:ok"}, kinds(rec.take()), "a harmless read: its outcome")

	e.duo.Script("alice", duotest.Deny)
	require.True(t, call(t, cs, "get_contact", map[string]any{"id": 6}).IsError)
	assert.Equal(t, []string{"stepup.requested", "stepup.denied:denied"}, kinds(rec.take()))
	require.True(t, call(t, cs, "get_contact", map[string]any{"id": 6}).IsError)
	assert.Equal(t, []string{"stepup.failed:cooldown"}, kinds(rec.take()))
	require.True(t, call(t, cs, "create_deal", map[string]any{"contact_id": 1, "title": "t", "amount": 1, "currency": "usd"}).IsError)
	assert.Equal(t, []string{"tool.called:invalid"}, kinds(rec.take()))

	// The approval cannot be recorded: the write does not happen.
	e.duo.Script("alice", duotest.Approve)
	rec.fail = func(ev audit.Event) bool { return ev.Kind == audit.StepUpApproved }
	cs2 := e2.connect(t, e2.as.Mint(e2.as.Claims("bob", e2.resource, "crm")))
	res := call(t, cs2, "update_contact", map[string]any{"id": 2, "name": "Not Written"})
	require.True(t, res.IsError)
	assert.Contains(t, text(res), "audit trail")
	got, err := e2.store.GetContact(t.Context(), 2)
	require.NoError(t, err)
	assert.Equal(t, "Tomás Ferreira", got.Name)

	// A read whose outcome cannot be recorded returns nothing.
	rec.fail = func(ev audit.Event) bool { return ev.Kind == audit.ToolCalled }
	res = call(t, cs2, "list_contacts", nil)
	require.True(t, res.IsError)
	assert.NotContains(t, text(res), "Maya")
}
