package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Kind is what an event records.
type Kind string

// The events of the audit trail. Each names one decision of the request
// path, in the order a call meets them.
const (
	// AuthFailed: the front door refused a token (Reason says why, such as
	// expired or wrong audience). A Tally writes it as a count: Count
	// requests from Source refused for Reason since Since.
	AuthFailed Kind = "auth.failed"
	// ScopeDenied: a valid token lacks the scope a tool needs.
	ScopeDenied Kind = "scope.denied"
	// StepUpRequested: a Duo Push was sent (DuoTxID names it).
	StepUpRequested Kind = "stepup.requested"
	// StepUpApproved: the user approved the push, or a recent approval
	// covers the call (Reason says which).
	StepUpApproved Kind = "stepup.approved"
	// StepUpDenied: the user denied the push or reported fraud.
	StepUpDenied Kind = "stepup.denied"
	// StepUpFailed: no approval could be had. Reason says why: timeout,
	// duo_error, cooldown, cap (too many pushes), cancelled...
	StepUpFailed Kind = "stepup.failed"
	// ToolCalled: a tool ran; Outcome and Duration say how it went.
	ToolCalled Kind = "tool.called"
	// Recovered is written by the Log only: by Open after it removed a
	// torn final line left by a crash (Reason gives its size and
	// SHA-256), and by Record once the file can be written again after a
	// failed write (Reason says since when and how many events were
	// refused).
	Recovered Kind = "audit.recovered"
)

// kinds maps each event a caller may record to the decision it implies
// ("" when the event implies none).
var kinds = map[Kind]string{
	AuthFailed:      "deny",
	ScopeDenied:     "deny",
	StepUpRequested: "",
	StepUpApproved:  "allow",
	StepUpDenied:    "deny",
	StepUpFailed:    "deny",
	ToolCalled:      "",
}

// Event is one decision. Only Kind is always required; the rest is what
// the caller knows at that point. Never put a token, an Authorization
// header or a secret in any field: name the token by its fingerprint
// (resourceserver.Token.Fingerprint, resourceserver.Fingerprint).
type Event struct {
	// Time of the decision; zero means when Record is called.
	Time time.Time
	Kind Kind

	RequestID string // correlates the events of one HTTP request

	// Who: from the access token.
	Issuer           string
	Subject          string
	ClientID         string
	JTI              string
	TokenFingerprint string // resourceserver.Fingerprint(token): "sha256:" and 16 hex digits

	// What: the tool and its arguments. Args is the JSON of the call's
	// arguments exactly as the client sent them (params.arguments), and
	// ArgsSHA256 the hex SHA-256 of exactly those bytes, so that an
	// auditor holding the request can recompute it; empty means this
	// package hashes Args itself. The log always holds the hash
	// (args_sha256), and the arguments only with Options.IncludeArgs
	// (with insignificant space removed, so the line stays one line).
	Tool       string
	Args       json.RawMessage
	ArgsSHA256 string

	// Decision is allow or deny; empty takes the one the Kind implies
	// (deny for auth.failed, scope.denied, stepup.denied and stepup.failed,
	// allow for stepup.approved). A Decision contradicting the Kind is an
	// error.
	Decision string
	Reason   string // required for auth.failed and stepup.failed
	DuoTxID  string

	// Outcome (required for tool.called) is how the tool call ended, a
	// code such as ok, error, invalid or started (govern.Outcome);
	// Duration how long it ran.
	Outcome  string
	Duration time.Duration
}

// line is an event as written: the JSON members in this order.
type line struct {
	Seq        uint64          `json:"seq"`
	Prev       string          `json:"prev"`
	Time       string          `json:"time"`
	Event      Kind            `json:"event"`
	RequestID  string          `json:"request_id,omitempty"`
	Issuer     string          `json:"issuer,omitempty"`
	Subject    string          `json:"subject,omitempty"`
	ClientID   string          `json:"client_id,omitempty"`
	JTI        string          `json:"jti,omitempty"`
	TokenFP    string          `json:"token_fp,omitempty"`
	Tool       string          `json:"tool,omitempty"`
	ArgsHash   string          `json:"args_sha256,omitempty"`
	Args       json.RawMessage `json:"args,omitempty"`
	Decision   string          `json:"decision,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	DuoTxID    string          `json:"duo_txid,omitempty"`
	Outcome    string          `json:"outcome,omitempty"`
	DurationMS *float64        `json:"duration_ms,omitempty"`
	// A Tally's line: refusals from Source counted since Since.
	Source string `json:"source,omitempty"`
	Count  int    `json:"count,omitempty"`
	Since  string `json:"since,omitempty"`
}

// FieldError is an Event that cannot be recorded, naming the field.
type FieldError struct {
	Kind  Kind
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("audit: event %q: %s %s", e.Kind, e.Field, e.Msg)
}

// toLine validates e and turns it into a line, without seq and prev.
func toLine(e Event, includeArgs bool, now time.Time) (line, error) {
	implied, ok := kinds[e.Kind]
	if !ok {
		msg := "is not an event kind"
		if e.Kind == Recovered {
			msg = "is written by the Log only"
		}
		return line{}, &FieldError{Kind: e.Kind, Field: "Kind", Msg: msg}
	}
	switch e.Decision {
	case "":
		e.Decision = implied
	case "allow", "deny":
		if implied != "" && e.Decision != implied {
			return line{}, &FieldError{Kind: e.Kind, Field: "Decision", Msg: fmt.Sprintf("%q contradicts the event, which is a %s", e.Decision, implied)}
		}
	default:
		return line{}, &FieldError{Kind: e.Kind, Field: "Decision", Msg: fmt.Sprintf("%q is not allow or deny", e.Decision)}
	}
	if (e.Kind == AuthFailed || e.Kind == StepUpFailed) && e.Reason == "" {
		return line{}, &FieldError{Kind: e.Kind, Field: "Reason", Msg: "is required"}
	}
	if e.Kind == ToolCalled {
		if e.Tool == "" {
			return line{}, &FieldError{Kind: e.Kind, Field: "Tool", Msg: "is required"}
		}
		if e.Outcome == "" {
			return line{}, &FieldError{Kind: e.Kind, Field: "Outcome", Msg: "is required"}
		}
	}
	if e.Duration < 0 {
		return line{}, &FieldError{Kind: e.Kind, Field: "Duration", Msg: "is negative"}
	}
	t := e.Time
	if t.IsZero() {
		t = now
	}
	l := line{
		Time:      t.UTC().Format(time.RFC3339Nano),
		Event:     e.Kind,
		RequestID: e.RequestID,
		Issuer:    e.Issuer,
		Subject:   e.Subject,
		ClientID:  e.ClientID,
		JTI:       e.JTI,
		TokenFP:   e.TokenFingerprint,
		Tool:      e.Tool,
		Decision:  e.Decision,
		Reason:    e.Reason,
		DuoTxID:   e.DuoTxID,
		Outcome:   e.Outcome,
	}
	if len(e.Args) > 0 {
		var compact bytes.Buffer
		if err := json.Compact(&compact, e.Args); err != nil {
			return line{}, &FieldError{Kind: e.Kind, Field: "Args", Msg: "is not JSON: " + err.Error()}
		}
		l.ArgsHash = hashHex(e.Args)
		if includeArgs {
			l.Args = compact.Bytes()
		}
	}
	if e.ArgsSHA256 != "" {
		if len(e.ArgsSHA256) != 64 || strings.Trim(e.ArgsSHA256, "0123456789abcdef") != "" {
			return line{}, &FieldError{Kind: e.Kind, Field: "ArgsSHA256", Msg: "is not 64 lower-case hex digits"}
		}
		l.ArgsHash = e.ArgsSHA256
	}
	if e.Kind == ToolCalled {
		ms := float64(e.Duration.Microseconds()) / 1000
		l.DurationMS = &ms
	}
	return l, nil
}

func hashHex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
