package crm

import (
	"errors"
	"fmt"
)

// ErrNotFound is wrapped by every error about a contact or deal id that does
// not exist, e.g. "contact 42: not found". Test for it with errors.Is.
var ErrNotFound = errors.New("not found")

// ValidationError says which input field is wrong and how to fix it. Its
// message is meant for the end user (and the model driving the tools), so it
// quotes the offending value only where that helps, and never a long one.
// Test for it with errors.As.
type ValidationError struct {
	// Field is the JSON name of the offending input, e.g. "email" or
	// "contact_id".
	Field string
	// Problem is what is wrong and, where it is not obvious, what to do.
	Problem string
}

// Error returns "field: problem", e.g.
// `email: "x@" is not a valid email address`.
func (e *ValidationError) Error() string {
	return e.Field + ": " + e.Problem
}

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

func notFound(kind string, id int64) error {
	return fmt.Errorf("%s %d: %w", kind, id, ErrNotFound)
}
