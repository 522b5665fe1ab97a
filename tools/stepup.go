package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/stepup"
)

// StepUp configures the Duo Push asked for before sensitive calls run.
type StepUp struct {
	// Guard sends the push and waits for the answer. Required.
	Guard *stepup.Guard
	// Terms are the words in a call's text arguments that make it
	// sensitive (SENSITIVE_QUERY_TERMS). Required.
	Terms *stepup.Terms
	// OnWrite asks for approval before every write (STEPUP_ON_WRITE).
	OnWrite bool
	// Tools always ask for approval (STEPUP_TOOLS).
	Tools []string
	// UsernameClaim is the access-token claim holding the Duo user
	// (DUO_USERNAME_CLAIM); default "sub". The Duo user never comes from
	// the request body.
	UsernameClaim string
}

// Reasons for approval, shown on the phone. Those taken from the request
// are also told to the agent on a refusal; reasonRestricted, the one that
// comes from stored data, is not (see decide).
const (
	reasonWrite      = "the call changes CRM data"
	reasonListed     = "the tool always needs approval"
	reasonAsks       = "the call asks for restricted records"
	reasonRestricted = "the record it names is classified restricted"
)

// decide settles whether the call needs Duo approval and, if so, gets it.
// It runs after the scope check and before the tool; an error means the
// tool must not run. On success c.approved says whether the call may
// return restricted records.
//
// Whether a call needs approval, waits for another push, or is refused by
// the cool-down or the push cap is decided from the request: the tool, its
// arguments (sensitive terms, include_restricted, writes, STEPUP_TOOLS) and
// the classification of the record it names by id. Never from whether a
// free-text search would match restricted data: that would tell an agent,
// one question at a time, what the restricted records hold. A search that
// is not approved simply leaves restricted records out.
func decide[In, Out any](ctx context.Context, d *deps, req *mcp.CallToolRequest, td *toolDef[In, Out], c *call[In]) error {
	su := d.stepUp
	name := td.tool.Name
	var user string
	var reasons []string // from the request alone
	if su != nil {
		var err error
		if user, err = duoUser(c.tok, su.UsernameClaim); err != nil {
			return err
		}
		if td.writes && su.OnWrite {
			reasons = append(reasons, reasonWrite)
		}
		if slices.Contains(su.Tools, name) {
			reasons = append(reasons, reasonListed)
		}
		if term, ok := su.Terms.Find(c.args); ok {
			reasons = append(reasons, fmt.Sprintf("the request mentions %q", term))
		}
	}
	asks := td.asks != nil && td.asks(c.in)
	c.asked = asks
	if asks {
		reasons = append(reasons, reasonAsks)
	}
	all := reasons
	if td.names != nil && (td.named == nil || td.named(c.in)) {
		if su != nil {
			// While no push can be sent, every call that names a record is
			// refused before the record is read, so the refusal does not
			// tell which records are restricted.
			if err := su.Guard.BlockedContext(ctx, user); err != nil {
				d.log.InfoContext(ctx, "step-up blocked", "tool", name, "sub", c.tok.Subject, "error", err.Error())
				if rerr := d.note(ctx, c.ev, stepUpOutcome(err)); rerr != nil {
					return rerr
				}
				return &toolError{fmt.Sprintf("%s was not run. %s", name, err.Error())}
			}
		}
		t, err := td.names(ctx, c.in)
		if err != nil {
			// An unknown id, or the store failing: no decision to record,
			// but the call's end is on record.
			if rerr := d.note(ctx, c.ev, audit.Event{Kind: audit.ToolCalled, Outcome: "error"}); rerr != nil {
				return rerr
			}
			return err
		}
		c.target = t
		if t.restricted {
			all = append(slices.Clip(reasons), reasonRestricted)
		}
	}
	if len(all) == 0 {
		return nil
	}
	if su == nil {
		if asks || c.target.restricted {
			d.log.WarnContext(ctx, "STEP-UP IS OFF: restricted records move without Duo approval (STEPUP_MODE=off)", "tool", name)
		}
		if err := d.note(ctx, c.ev, audit.Event{Kind: audit.StepUpApproved, Reason: "step-up is off (STEPUP_MODE=off)"}); err != nil {
			return err
		}
		c.approved = true
		return nil
	}

	action, details, err := td.describe(c)
	if err != nil {
		if rerr := d.note(ctx, c.ev, audit.Event{Kind: audit.StepUpFailed, Reason: string(stepup.Unshowable)}); rerr != nil {
			return rerr
		}
		return err
	}
	reason := strings.Join(all, "; ")
	// A call may wait here for minutes (its own push, or another call's),
	// so one user, and all users, can hold only so many (inflight.go). The
	// place is held until Authorize returns.
	release, err := d.waitPlace(ctx, user, name, c.ev)
	if err != nil {
		return err
	}
	defer release()
	d.log.InfoContext(ctx, "step-up required", "tool", name, "sub", c.tok.Subject, "reason", reason)
	if err := d.note(ctx, c.ev, audit.Event{Kind: audit.StepUpRequested, Reason: reason}); err != nil {
		return err
	}
	approval, err := su.Guard.Authorize(ctx, stepup.Request{
		User:     user,
		Tool:     name,
		Action:   action,
		Details:  details,
		Reason:   reason,
		ClientID: c.tok.ClientID,
		// An approval covers this principal (issuer, subject) through this
		// client only, and this exact call.
		Key: c.tok.Issuer + " " + c.tok.Subject + " " + c.tok.ClientID + " " + callKey(name, c.in),
		// One approval must not let a write happen twice.
		Once: td.writes,
	}, progress(ctx, req, name))
	if err != nil {
		d.log.WarnContext(ctx, "step-up refused", "tool", name, "sub", c.tok.Subject, "error", err.Error())
		if rerr := d.note(ctx, c.ev, stepUpOutcome(err)); rerr != nil {
			return rerr
		}
		var se *stepup.Error
		if errors.As(err, &se) && se.Outcome == stepup.Unshowable {
			return &toolError{fmt.Sprintf("%s was not run, and no approval was asked for. %s", name, err.Error())}
		}
		// The agent hears the reasons its request gave, never the one the
		// data gave.
		why := ""
		if len(reasons) > 0 {
			why = " because " + strings.Join(reasons, "; ")
		}
		return &toolError{fmt.Sprintf("%s needs approval on your phone (Duo Push)%s. %s", name, why, err.Error())}
	}
	d.log.InfoContext(ctx, "step-up approved", "tool", name, "sub", c.tok.Subject, "by", approval.By)
	// On record before the call runs.
	if err := d.note(ctx, c.ev, audit.Event{Kind: audit.StepUpApproved, Reason: approval.By, DuoTxID: approval.TxID}); err != nil {
		return err
	}
	c.approved = true
	return nil
}

// waitPlace takes a place among the calls waiting on a push, or refuses
// the call (on record as stepup.failed "busy") when the user's own, or all
// users', waiting calls are at their bound. It is decided from the counts
// alone, before anything is pushed.
func (d *deps) waitPlace(ctx context.Context, user, name string, ev *audit.Event) (func(), error) {
	if d.waiting == nil {
		return func() {}, nil
	}
	release, perUser, ok := d.waiting.acquire(user)
	if ok {
		return release, nil
	}
	limit, msg := LimitStepUpWaiting, fmt.Sprintf("the server has %d calls waiting for approval, the most it holds; no push was sent. Retry in a minute.", d.waiting.max)
	if perUser {
		limit, msg = LimitStepUpWaitingPerUser, fmt.Sprintf("you already have %d calls waiting for approval on your phone, the most one user may have; no push was sent. Answer the push, or retry when those calls end.", d.waiting.perUser)
	}
	if d.onLimit != nil {
		d.onLimit(limit)
	}
	d.log.InfoContext(ctx, "step-up refused: too many calls waiting", "tool", name, "limit", limit)
	if err := d.note(ctx, ev, audit.Event{Kind: audit.StepUpFailed, Reason: "busy"}); err != nil {
		return nil, err
	}
	return nil, &toolError{fmt.Sprintf("%s was not run: %s", name, msg)}
}

// stepUpOutcome is the audit line for a refusal by the guard: denied by
// the person (stepup.denied), or no approval to be had (stepup.failed),
// with a short reason and the push's txid when one was sent.
func stepUpOutcome(err error) audit.Event {
	var se *stepup.Error
	if !errors.As(err, &se) {
		return audit.Event{Kind: audit.StepUpFailed, Reason: "error"}
	}
	ev := audit.Event{Kind: audit.StepUpFailed, DuoTxID: se.TxID}
	switch se.Outcome {
	case stepup.Denied, stepup.Fraud:
		ev.Kind, ev.Reason = audit.StepUpDenied, string(se.Outcome)
	case stepup.TimedOut:
		ev.Reason = "timeout"
	case stepup.CoolingDown:
		ev.Reason = "cooldown"
	case stepup.TooManyPushes:
		ev.Reason = "cap"
	case stepup.Unavailable, stepup.Misconfigured, stepup.RateLimited:
		ev.Reason = "duo_error: " + string(se.Outcome)
	default:
		ev.Reason = string(se.Outcome) // locked_out, enroll, preauth_denied, cancelled, unshowable
	}
	return ev
}

// duoUser reads the Duo user from the verified token, never from the
// request.
func duoUser(tok *resourceserver.Token, claim string) (string, error) {
	if claim == "" {
		claim = "sub"
	}
	if tok == nil {
		return "", &toolError{"this call needs approval, but the request carries no verified token"}
	}
	user, _ := tok.Claims[claim].(string)
	if user == "" {
		return "", &toolError{fmt.Sprintf("this call needs Duo approval, but the access token has no %q claim to name the Duo user; the administrator must set DUO_USERNAME_CLAIM", claim)}
	}
	return user, nil
}

// progress returns the callback that turns the guard's waiting messages
// into MCP progress notifications, when the client asked for them with a
// progress token; they keep the request open and tell the user why.
func progress(ctx context.Context, req *mcp.CallToolRequest, name string) func(string) {
	token := req.Params.GetProgressToken()
	if token == nil || req.Session == nil {
		return nil
	}
	n := 0.0
	return func(msg string) {
		n++
		_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
			ProgressToken: token,
			Progress:      n,
			Message:       msg,
		})
	}
}

// maxQuoted bounds an argument quoted in an action sentence, in
// characters once invisible characters are written out.
const maxQuoted = 200

// quoted is an argument as an action sentence quotes it (stepup.Quote),
// whole, or an error naming the argument. Its length depends on the
// request alone.
func quoted(field, v string) (string, error) {
	s := stepup.Quote(v)
	if n := utf8.RuneCountInString(s) - 2; n > maxQuoted {
		return "", &toolError{fmt.Sprintf("%s is too long to show on the phone for approval: %d characters once invisible characters are written out, at most %d fit. Shorten %s and call again.", field, n, maxQuoted, field)}
	}
	return s, nil
}

// maxLabel bounds a stored name in an action sentence. It is context the
// approver recognises the record by, read from the store, so it is cut,
// never refused: a stored value's length must not decide a refusal.
const maxLabel = 60

// label is a stored value as an action sentence shows it: escaped like a
// quoted value (so a stored title cannot close its own quotes) and cut.
func label(v string) string {
	s := strings.ReplaceAll(stepup.Display(v), `"`, `\"`)
	if r := []rune(s); len(r) > maxLabel {
		s = string(r[:maxLabel-1]) + "…"
	}
	return s
}

// contactLabel names a stored contact: "#3 Priya Raman (Ledgerstone
// Capital)".
func contactLabel(c *crm.Contact) string {
	s := fmt.Sprintf("#%d %s", c.ID, label(c.Name))
	if c.Company != "" {
		s += " (" + label(c.Company) + ")"
	}
	return s
}

// money formats an amount in minor units: 1200000 EUR is "12,000.00 EUR".
func money(amount int64, currency string) string {
	sign := ""
	if amount < 0 {
		sign, amount = "-", -amount
	}
	units := strconv.FormatInt(amount/100, 10)
	var b strings.Builder
	for i, r := range units {
		if i > 0 && (len(units)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return fmt.Sprintf("%s%s.%02d %s", sign, b.String(), amount%100, stepup.Display(currency))
}

// callKey identifies a call for grants and shared pushes: the tool and its
// decoded arguments re-encoded. The struct fixes the field order, so two
// spellings of one request share a key, and it reuses the value go-sdk
// decoded instead of parsing the arguments again.
func callKey(tool string, in any) string {
	b, err := json.Marshal(in)
	if err != nil { // cannot happen for these input types; fail apart
		return strconv.Quote(tool) + " !" + err.Error()
	}
	return strconv.Quote(tool) + " " + string(b)
}
