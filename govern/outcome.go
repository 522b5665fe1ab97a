package govern

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/stepup"
)

// Outcome is a decision or outcome of a governed call as a stable code, so
// that the audit trail and metrics count codes instead of parsing text.
type Outcome string

// The codes, in the order a call may meet them.
const (
	ScopeDenied    Outcome = "scope_denied"    // the token lacks a scope (in-band check)
	ScopeExplained Outcome = "scope_explained" // the same, answered "ask an administrator"
	Invalid        Outcome = "invalid"         // the arguments do not fit the input schema
	Requested      Outcome = "requested"       // a Duo Push is asked for
	Approved       Outcome = "approved"        // Event.Via says push, grant or bypass
	StepUpOff      Outcome = "stepup_off"      // would have needed approval; step-up is off
	Denied         Outcome = "denied"
	Fraud          Outcome = "fraud"
	Timeout        Outcome = "timeout"
	Cooldown       Outcome = "cooldown"
	Cap            Outcome = "cap"  // too many pushes
	Busy           Outcome = "busy" // too many calls waiting on a push (limits.go)
	DuoError       Outcome = "duo_error"
	Unshowable     Outcome = "unshowable"
	LockedOut      Outcome = "locked_out"
	Enroll         Outcome = "enroll"
	PreauthDenied  Outcome = "preauth_denied"
	Cancelled      Outcome = "cancelled"
	NoDuoUser      Outcome = "no_duo_user" // the token names no Duo user
	Started        Outcome = "started"     // a write is about to run
	OK             Outcome = "ok"
	Error          Outcome = "error"
)

// Event is one decision about one call, for the Recorder. It carries codes
// and identities only, never a message text or a token.
type Event struct {
	// Kind is the audit trail's event kind for this decision.
	Kind    audit.Kind
	Outcome Outcome
	// RequestID is shared by every event of one HTTP request (made by the
	// Gate, or by the handler without one).
	RequestID string
	Tool      string
	Token     *resourceserver.Token
	// Args are the arguments as the client sent them, and ArgsSHA256 the
	// hex SHA-256 of exactly those bytes, which an auditor can recompute.
	Args       json.RawMessage
	ArgsSHA256 string
	// Reason: the scopes lacking, or the reasons a push was asked for.
	Reason   string
	Via      string // how approved: push, grant, bypass
	DuoTxID  string
	Duration time.Duration
}

// Recorder hears every decision before it is acted on. An error fails the
// call closed: a decision that is not on record must not be acted on.
type Recorder func(ctx context.Context, e Event) error

// AuditEvent is e as the audit package records it: args_sha256 is
// e.ArgsSHA256, the hash of the bytes the client sent, and the outcome or
// reason is the code.
func (e Event) AuditEvent() audit.Event {
	a := audit.Event{Kind: e.Kind, RequestID: e.RequestID, Tool: e.Tool, Args: e.Args, ArgsSHA256: e.ArgsSHA256, DuoTxID: e.DuoTxID}
	if t := e.Token; t != nil {
		a.Issuer, a.Subject, a.ClientID, a.JTI, a.TokenFingerprint = t.Issuer, t.Subject, t.ClientID, t.JTI, t.Fingerprint
	}
	switch e.Kind {
	case audit.ToolCalled:
		a.Outcome, a.Duration = string(e.Outcome), e.Duration
	case audit.StepUpApproved:
		a.Reason = e.Via
		if e.Outcome == StepUpOff {
			a.Reason = "step-up is off (STEPUP_MODE=off)"
		}
	case audit.StepUpRequested, audit.ScopeDenied:
		a.Reason = e.Reason
	default:
		a.Reason = string(e.Outcome)
	}
	return a
}

// refusalOutcome maps a refusal of the guard to its code and audit kind.
func refusalOutcome(err error) (audit.Kind, Outcome, string) {
	var se *stepup.Error
	if !errors.As(err, &se) {
		return audit.StepUpFailed, Error, ""
	}
	switch se.Outcome {
	case stepup.Denied:
		return audit.StepUpDenied, Denied, se.TxID
	case stepup.Fraud:
		return audit.StepUpDenied, Fraud, se.TxID
	case stepup.TimedOut:
		return audit.StepUpFailed, Timeout, se.TxID
	case stepup.CoolingDown:
		return audit.StepUpFailed, Cooldown, se.TxID
	case stepup.TooManyPushes:
		return audit.StepUpFailed, Cap, se.TxID
	case stepup.Unshowable:
		return audit.StepUpFailed, Unshowable, se.TxID
	case stepup.LockedOut:
		return audit.StepUpFailed, LockedOut, se.TxID
	case stepup.Enroll:
		return audit.StepUpFailed, Enroll, se.TxID
	case stepup.PreauthDenied:
		return audit.StepUpFailed, PreauthDenied, se.TxID
	case stepup.Cancelled:
		return audit.StepUpFailed, Cancelled, se.TxID
	}
	return audit.StepUpFailed, DuoError, se.TxID // unavailable, misconfigured, rate_limited
}
