package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

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

// Reasons that do not reveal restricted data: they are shown on the phone
// and, on a refusal, to the agent.
const (
	reasonWrite      = "the call changes CRM data"
	reasonListed     = "the tool always needs approval"
	reasonRestricted = "the call would return or change a record classified restricted"
)

// approve decides whether a call needs step-up and, if so, gets Duo's
// approval. It runs after the scope check and before the tool; any error
// means the tool must not run.
//
// probes says the call names or searches records, so whether it needs
// approval depends on the data it touches. While no push can be sent (a
// cool-down after a denial, the push cap), such calls are refused before
// the data is consulted: otherwise refusals would tell an agent, one free
// question at a time, which records are restricted.
func (d *deps) approve(ctx context.Context, req *mcp.CallToolRequest, name string, writes, probes bool, restricted func() (bool, error)) error {
	su := d.stepUp
	tok := resourceserver.TokenFromContext(ctx)
	var user string
	if su != nil {
		var err error
		if user, err = duoUser(tok, su.UsernameClaim); err != nil {
			return err
		}
		if probes {
			if err := su.Guard.Blocked(user); err != nil {
				d.log.InfoContext(ctx, "step-up blocked", "tool", name, "sub", tok.Subject, "error", err.Error())
				return &toolError{fmt.Sprintf("%s was not run. %s", name, err.Error())}
			}
		}
	}

	var reasons []string
	if su != nil && writes && su.OnWrite {
		reasons = append(reasons, reasonWrite)
	}
	if su != nil && slices.Contains(su.Tools, name) {
		reasons = append(reasons, reasonListed)
	}
	if su != nil {
		if term, ok := su.Terms.Find(json.RawMessage(req.Params.Arguments)); ok {
			reasons = append(reasons, fmt.Sprintf("the request mentions %q", term))
		}
	}
	if restricted != nil {
		// Asked even when step-up is off, so that a store failure fails
		// closed the same way in every mode.
		r, err := restricted()
		if err != nil {
			return err
		}
		switch {
		case r && su != nil:
			reasons = append(reasons, reasonRestricted)
		case r:
			d.log.WarnContext(ctx, "STEP-UP IS OFF: a restricted record moves without Duo approval (STEPUP_MODE=off)", "tool", name)
		}
	}
	if len(reasons) == 0 {
		return nil
	}

	reason := strings.Join(reasons, "; ")
	d.log.InfoContext(ctx, "step-up required", "tool", name, "sub", tok.Subject, "reason", reason)
	err := su.Guard.Approve(ctx, stepup.Request{
		User:     user,
		Tool:     name,
		Reason:   reason,
		Summary:  summarize(req.Params.Arguments),
		ClientID: tok.ClientID,
		// An approval covers this principal (issuer, subject) through this
		// client only, and this exact call.
		Key: tok.Issuer + " " + tok.Subject + " " + tok.ClientID + " " + stepup.CanonicalKey(name, req.Params.Arguments),
		// One approval must not let a write happen twice.
		Once: writes,
	}, progress(ctx, req, name))
	if err != nil {
		d.log.WarnContext(ctx, "step-up refused", "tool", name, "sub", tok.Subject, "error", err.Error())
		return &toolError{fmt.Sprintf("%s needs approval on your phone (Duo Push) because %s. %s", name, reason, err.Error())}
	}
	d.log.InfoContext(ctx, "step-up approved", "tool", name, "sub", tok.Subject)
	return nil
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

// summarize is a short, single-line form of the arguments for the push.
func summarize(args json.RawMessage) string {
	var v any
	if json.Unmarshal(args, &v) != nil {
		return "(unreadable arguments)"
	}
	b, _ := json.Marshal(v)
	s := string(b)
	if s == "null" || s == "{}" {
		return "(no arguments)"
	}
	const max = 300
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}
