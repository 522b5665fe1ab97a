package govern

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/stepup"
)

// Reasons for approval, shown on the phone. Those from the request are
// also told to the agent on a refusal; reasonRecord, from stored data, is
// not (see decide).
const (
	reasonWrite  = "the call changes data"
	reasonAlways = "the tool always needs approval"
	reasonRecord = "the record it names is classified restricted"
)

// decide settles whether the call needs Duo approval and, if so, gets it;
// an error means the tool must not run. It ports tools/stepup.go's decide
// with the same guarantees:
//
// Whether a call needs approval, waits, or is refused by the cool-down or
// the push cap is decided from the request (the tool, its arguments) and
// the classification of the one record it names by id. Never from what a
// free-text search would match: that would tell an agent, one question at
// a time, what restricted records hold. While no push can be sent, a call
// that names a record is refused before the record is read, so the
// refusal does not tell which records are restricted. The agent hears the
// reasons its request gave, never the one the data gave.
func (g *Governor) decide(ctx context.Context, gt *governed, c *Call, n *noter) error {
	p := &gt.policy
	name := gt.name
	reasons, asked := g.requestReasons(gt, c.Args)
	all := reasons
	var user string
	duoUser := func() error {
		if g.cfg.Guard == nil || user != "" {
			return nil
		}
		user, _ = c.Token.Claims[g.cfg.UsernameClaim].(string)
		if user == "" {
			if err := n.note(Event{Kind: audit.StepUpFailed, Outcome: NoDuoUser}); err != nil {
				return err
			}
			return &ToolError{fmt.Sprintf("%s needs Duo approval, but the access token has no %q claim to name the Duo user; the administrator must set DUO_USERNAME_CLAIM", name, g.cfg.UsernameClaim)}
		}
		return nil
	}

	if ref := p.Record; ref != nil {
		id, given := c.Args[ref.Arg]
		if given && (!ref.NonZero || !isZero(id)) {
			if g.cfg.Guard != nil {
				if err := duoUser(); err != nil {
					return err
				}
				if err := g.cfg.Guard.BlockedContext(ctx, user); err != nil {
					g.log.InfoContext(ctx, "step-up blocked", "tool", name, "sub", c.Token.Subject, "error", err.Error())
					kind, code, tx := refusalOutcome(err)
					if rerr := n.note(Event{Kind: kind, Outcome: code, DuoTxID: tx}); rerr != nil {
						return rerr
					}
					return &ToolError{fmt.Sprintf("%s was not run. %s", name, err.Error())}
				}
			}
			rec, err := g.cfg.Records.Lookup(ctx, ref.Kind, id)
			if err == nil && rec == nil {
				err = errors.New("Records.Lookup returned no record and no error")
			}
			if err != nil {
				if rerr := n.note(Event{Kind: audit.ToolCalled, Outcome: Error}); rerr != nil {
					return rerr
				}
				return err
			}
			c.Record = rec
			if rec.Restricted {
				all = append(slices.Clip(reasons), reasonRecord)
			}
		} else if !given && !ref.NonZero {
			if rerr := n.note(Event{Kind: audit.ToolCalled, Outcome: Invalid}); rerr != nil {
				return rerr
			}
			return &ToolError{fmt.Sprintf("%s needs the argument %s", name, ref.Arg)}
		}
	}
	if len(all) == 0 {
		return nil
	}
	sensitive := asked || c.Record != nil && c.Record.Restricted
	if g.cfg.Guard == nil {
		g.log.WarnContext(ctx, "STEP-UP IS OFF: a call that needs Duo approval runs without it (STEPUP_MODE=off)", "tool", name, "sensitive", sensitive)
		if err := n.note(Event{Kind: audit.StepUpApproved, Outcome: StepUpOff, Reason: strings.Join(all, "; ")}); err != nil {
			return err
		}
		c.Approved, c.ApprovedSensitive = true, sensitive
		return nil
	}
	if err := duoUser(); err != nil {
		return err
	}
	action, details, err := gt.desc.describe(c.Args, c.Record)
	if err != nil {
		if rerr := n.note(Event{Kind: audit.StepUpFailed, Outcome: Unshowable}); rerr != nil {
			return rerr
		}
		return &ToolError{fmt.Sprintf("%s was not run, and no approval was asked for. %s", name, err.Error())}
	}
	reason := strings.Join(all, "; ")
	// A call may wait here for minutes (its own push, or another call's),
	// so one user, and all users, can hold only so many (limits.go). The
	// place is held until Authorize returns.
	release, err := g.waitPlace(c, n)
	if err != nil {
		return err
	}
	defer release()
	g.log.InfoContext(ctx, "step-up required", "tool", name, "sub", c.Token.Subject, "reason", reason)
	if err := n.note(Event{Kind: audit.StepUpRequested, Outcome: Requested, Reason: reason}); err != nil {
		return err
	}
	tok := c.Token
	approval, err := g.cfg.Guard.Authorize(ctx, stepup.Request{
		User:     user,
		Tool:     name,
		Action:   action,
		Details:  details,
		Reason:   reason,
		ClientID: tok.ClientID,
		// An approval covers this principal through this client only, and
		// this exact call: one canonical form of the decoded arguments.
		// Each part quoted: joined bare, subject "a b" of client "c" and
		// subject "a" of client "b c" would share a key.
		Key: strconv.Quote(tok.Issuer) + " " + strconv.Quote(tok.Subject) + " " + strconv.Quote(tok.ClientID) + " " + strconv.Quote(name) + " " + string(c.ArgsJSON()),
		// One approval must not let a write happen twice.
		Once: gt.policy.Writes,
	}, progress(ctx, c))
	if err != nil {
		g.log.WarnContext(ctx, "step-up refused", "tool", name, "sub", tok.Subject, "error", err.Error())
		kind, code, tx := refusalOutcome(err)
		if rerr := n.note(Event{Kind: kind, Outcome: code, DuoTxID: tx}); rerr != nil {
			return rerr
		}
		if code == Unshowable {
			return &ToolError{fmt.Sprintf("%s was not run, and no approval was asked for. %s", name, err.Error())}
		}
		why := ""
		if len(reasons) > 0 {
			why = " because " + strings.Join(reasons, "; ")
		}
		return &ToolError{fmt.Sprintf("%s needs approval on your phone (Duo Push)%s. %s", name, why, err.Error())}
	}
	g.log.InfoContext(ctx, "step-up approved", "tool", name, "sub", tok.Subject, "by", approval.By)
	if err := n.note(Event{Kind: audit.StepUpApproved, Outcome: Approved, Via: approval.By, DuoTxID: approval.TxID}); err != nil {
		return err
	}
	c.Approved, c.ApprovedSensitive = true, sensitive
	return nil
}

// requestReasons are the reasons the request alone gives, in a fixed
// order, and whether it asks for sensitive data itself (WhenArgumentIs).
func (g *Governor) requestReasons(gt *governed, args map[string]any) (reasons []string, asked bool) {
	p := &gt.policy
	if p.Writes && g.cfg.OnWrite {
		reasons = append(reasons, reasonWrite)
	}
	if gt.always {
		reasons = append(reasons, reasonAlways)
	}
	if g.cfg.Terms != nil && len(p.StepUp.TermsIn) > 0 {
		if term, ok := g.cfg.Terms.Find(searched(p.StepUp.TermsIn, args)); ok {
			reasons = append(reasons, fmt.Sprintf("the request mentions %q", term))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(p.StepUp.WhenArgumentOver)) {
		if f, ok := number(args[k]); ok && f > p.StepUp.WhenArgumentOver[k] {
			reasons = append(reasons, fmt.Sprintf("%s is over %s", k, strconv.FormatFloat(p.StepUp.WhenArgumentOver[k], 'g', -1, 64)))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(p.StepUp.WhenArgumentIs)) {
		v, given := args[k]
		if given && slices.ContainsFunc(p.StepUp.WhenArgumentIs[k], func(want any) bool { return same(v, want) }) {
			asked = true
			r := p.StepUp.Reason
			if r == "" {
				r = "the call asks for " + k + " " + escape(plain(v))
				if len(r) > 120 {
					r = "the call asks for a sensitive " + k
				}
			}
			if !slices.Contains(reasons, r) {
				reasons = append(reasons, r)
			}
		}
	}
	return reasons, asked
}

// searched is the part of args the sensitive terms are searched in.
func searched(in []string, args map[string]any) any {
	if slices.Contains(in, "*") {
		return args
	}
	out := make([]any, 0, len(in))
	for _, k := range in {
		if v, ok := args[k]; ok {
			out = append(out, v)
		}
	}
	return out
}

// number reads a decoded numeric argument.
func number(v any) (float64, bool) {
	switch v := v.(type) {
	case json.Number:
		f, err := v.Float64()
		return f, err == nil
	case float64:
		return v, true
	case int:
		return float64(v), true
	}
	return 0, false
}

// same compares a decoded argument with a policy value (from Go, YAML or
// JSON): numbers by value, strings ignoring case and surrounding space.
func same(arg, want any) bool {
	if a, ok := number(arg); ok {
		var w float64
		switch x := want.(type) {
		case int:
			w = float64(x)
		case int64:
			w = float64(x)
		case uint64:
			w = float64(x)
		default:
			var ok bool
			if w, ok = number(x); !ok {
				return false
			}
		}
		return a == w
	}
	switch a := arg.(type) {
	case string:
		w, ok := want.(string)
		return ok && strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(w))
	case bool:
		w, ok := want.(bool)
		return ok && a == w
	}
	return false
}

// isZero: an argument that names nothing (0, "", false, null).
func isZero(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case bool:
		return !v
	}
	f, ok := number(v)
	return ok && f == 0
}

// progress turns the guard's waiting messages into MCP progress
// notifications when the client asked for them with a progress token;
// they keep the request open and tell the user why.
func progress(ctx context.Context, c *Call) func(string) {
	req := c.Request
	if req == nil || req.Params == nil || req.Session == nil {
		return nil
	}
	token := req.Params.GetProgressToken()
	if token == nil {
		return nil
	}
	return func(msg string) {
		c.progress++
		_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: token, Progress: c.progress, Message: msg})
	}
}
