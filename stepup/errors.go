package stepup

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Outcome names why a call was not approved. Its values are stable strings,
// fit for logs and metrics.
type Outcome string

// The outcomes. Every one of them means the call must not run.
const (
	// Denied: the user tapped Deny in Duo Mobile.
	Denied Outcome = "denied"
	// Fraud: the user denied the push and reported it as fraud.
	Fraud Outcome = "fraud"
	// TimedOut: the deadline (Config.Timeout or the caller's) passed first,
	// or Duo gave up on the push because nobody answered it. Duo being too
	// slow to answer at all also ends here.
	TimedOut Outcome = "timed_out"
	// LockedOut: Duo has locked the user out (too many failures, or an
	// administrator did it).
	LockedOut Outcome = "locked_out"
	// Enroll: the user has no Duo device yet and must enroll first.
	Enroll Outcome = "enroll"
	// PreauthDenied: Duo policy denies this user outright.
	PreauthDenied Outcome = "preauth_denied"
	// Unavailable: Duo could not be reached or gave an answer we could not
	// read (network, TLS, HTTP 5xx, bad JSON, an unexpected Duo failure).
	Unavailable Outcome = "unavailable"
	// Misconfigured: Duo rejected our credentials (HTTP 401/403, codes
	// 401xx/403xx), or the caller passed an incomplete Request.
	Misconfigured Outcome = "misconfigured"
	// RateLimited: Duo answered 429 and waiting as told would pass our
	// deadline.
	RateLimited Outcome = "rate_limited"
	// TooManyPushes: the user reached Config.MaxPushes in the last ten
	// minutes; our own guard against push fatigue.
	TooManyPushes Outcome = "too_many_pushes"
	// CoolingDown: a push for this user was denied a short while ago, so
	// sensitive calls fail at once until Config.DenyCooldown has passed.
	CoolingDown Outcome = "cooling_down"
	// Cancelled: the caller's context was cancelled (the client went away).
	Cancelled Outcome = "cancelled"
	// Unshowable: the request cannot be shown to the approver whole (a
	// value too long, or too many rows for pushinfo), so no push was sent.
	// Error.Field names the detail at fault, when one is.
	Unshowable Outcome = "unshowable"
)

// Error is the only kind of error Approve and Check return. Msg says what
// happened and what the user or the administrator can do; it never holds a
// secret key, a signature or a token, so it may be shown to the MCP client.
type Error struct {
	Outcome Outcome
	Msg     string
	// Field is, for Unshowable, the Detail.Key (or "action") that cannot
	// be shown; empty when the request as a whole is too large.
	Field string
	// TxID is the Duo transaction id of the push that was denied, timed
	// out or failed, when one was sent: for the audit trail.
	TxID string
	err  error // cause, for errors.Is (context.Canceled, a net error...)
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the underlying cause, if any: context.Canceled or
// context.DeadlineExceeded when the caller's context ended, the transport
// error when Duo was unreachable.
func (e *Error) Unwrap() error { return e.err }

// IsOutcome reports whether err is (or wraps) an *Error with outcome o.
func IsOutcome(err error, o Outcome) bool {
	var e *Error
	return errors.As(err, &e) && e.Outcome == o
}

func newError(o Outcome, cause error, format string, args ...any) *Error {
	return &Error{Outcome: o, Msg: fmt.Sprintf(format, args...), err: cause}
}

// adminHint ends every message about our own Duo integration.
const adminHint = "the administrator must check DUO_AUTH_IKEY, DUO_AUTH_SKEY and DUO_AUTH_HOST (and that this server's clock is correct)"

// callerGone maps the end of a caller's context: a cancellation means the
// client went away; a deadline means the caller stopped waiting.
func callerGone(err error, subject string) *Error {
	if errors.Is(err, context.DeadlineExceeded) {
		return newError(TimedOut, err,
			"The deadline passed before Duo Push approval arrived, so %s was not run. Retry, and approve the push on your phone when it arrives.", subject)
	}
	return newError(Cancelled, err,
		"The request was cancelled while waiting for Duo Push approval, so %s was not run.", subject)
}

// until formats a moment for a message: the wall-clock time in UTC and how
// far away it is, rounded up to the second so it never reads "in 0s".
func until(now, t time.Time) string {
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	d = (d + time.Second - 1).Truncate(time.Second)
	return fmt.Sprintf("%s UTC (in %s)", t.UTC().Format("15:04:05"), d)
}
