package crm

import (
	"strings"
	"time"
)

// Classification says who may see a contact. The store records it and keeps
// restricted contacts out of listings by default; enforcing it is the
// caller's job (see the package documentation).
type Classification string

// The classifications, from least to most guarded.
const (
	Public     Classification = "public"
	Internal   Classification = "internal"
	Restricted Classification = "restricted"
)

var classifications = []Classification{Public, Internal, Restricted}

// Classifications returns every classification, least guarded first. The
// slice is the caller's to keep; it exists for schema enums and help text.
func Classifications() []Classification {
	return append([]Classification(nil), classifications...)
}

// ParseClassification turns user input into a Classification, ignoring case
// and surrounding space, so "Restricted " is accepted. Anything else,
// including the empty string, is a *ValidationError listing the valid values.
func ParseClassification(s string) (Classification, error) {
	c := Classification(strings.ToLower(strings.TrimSpace(s)))
	for _, v := range classifications {
		if c == v {
			return c, nil
		}
	}
	return "", invalid("classification", "%q is not a classification; use one of %s",
		s, join(classifications))
}

// Stage is where a deal stands in the pipeline.
type Stage string

// The stages, in pipeline order; Won and Lost are the two ends.
const (
	StageLead        Stage = "lead"
	StageQualified   Stage = "qualified"
	StageProposal    Stage = "proposal"
	StageNegotiation Stage = "negotiation"
	StageWon         Stage = "won"
	StageLost        Stage = "lost"
)

var stages = []Stage{StageLead, StageQualified, StageProposal, StageNegotiation, StageWon, StageLost}

// Stages returns every stage in pipeline order. The slice is the caller's to
// keep.
func Stages() []Stage {
	return append([]Stage(nil), stages...)
}

// ValidStage reports whether s is exactly one of [Stages]. The store is more
// forgiving of case and space (see [ParseStage]); ValidStage is for callers
// that need the canonical spelling, such as a schema check.
func ValidStage(s Stage) bool {
	for _, v := range stages {
		if s == v {
			return true
		}
	}
	return false
}

// ParseStage turns user input into a Stage, ignoring case and surrounding
// space. Anything else, including the empty string, is a *ValidationError
// listing the valid stages.
func ParseStage(s string) (Stage, error) {
	st := Stage(strings.ToLower(strings.TrimSpace(s)))
	if ValidStage(st) {
		return st, nil
	}
	return "", invalid("stage", "%q is not a stage; use one of %s", s, join(stages))
}

func join[T ~string](vs []T) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = string(v)
	}
	return strings.Join(parts, ", ")
}

// Contact is a person at a customer or prospect. The JSON form is the one
// tools return as structured output.
type Contact struct {
	ID             int64          `json:"id"`
	Name           string         `json:"name"`
	Email          string         `json:"email"`
	Phone          string         `json:"phone"`
	Company        string         `json:"company"`
	Sector         string         `json:"sector"`
	Classification Classification `json:"classification"`
	// Owner is the account owner inside our company, by name or email.
	Owner     string    `json:"owner"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// NewContact is the input to [Store.CreateContact]. Name and Email are
// required; an empty Classification means [Internal], the middle ground,
// because a record nobody classified should not be shown to everyone.
// Surrounding space is trimmed from every field, and Sector is lower-cased so
// that sectors compare as the category names they are.
type NewContact struct {
	Name           string         `json:"name"`
	Email          string         `json:"email"`
	Phone          string         `json:"phone,omitempty"`
	Company        string         `json:"company,omitempty"`
	Sector         string         `json:"sector,omitempty"`
	Classification Classification `json:"classification,omitempty"`
	Owner          string         `json:"owner,omitempty"`
}

// ContactUpdate is the input to [Store.UpdateContact]: a nil field is left as
// it is, a non-nil one replaces the stored value after the same checks as
// [NewContact] (so Name and Email cannot be emptied, while a pointer to ""
// clears Phone, Company, Sector or Owner).
type ContactUpdate struct {
	Name           *string         `json:"name,omitempty"`
	Email          *string         `json:"email,omitempty"`
	Phone          *string         `json:"phone,omitempty"`
	Company        *string         `json:"company,omitempty"`
	Sector         *string         `json:"sector,omitempty"`
	Classification *Classification `json:"classification,omitempty"`
	Owner          *string         `json:"owner,omitempty"`
}

func (u ContactUpdate) empty() bool {
	return u == ContactUpdate{}
}

// Deal is a sale in progress or closed with a contact. Amount is in minor
// units of Currency (cents for USD) so that sums are exact.
type Deal struct {
	ID        int64     `json:"id"`
	ContactID int64     `json:"contact_id"`
	Title     string    `json:"title"`
	Amount    int64     `json:"amount"`
	Currency  string    `json:"currency"`
	Stage     Stage     `json:"stage"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// NewDeal is the input to [Store.CreateDeal]. ContactID must name an existing
// contact, Currency must be an ISO 4217 code in upper case ("EUR", not "eur"),
// and an empty Stage means [StageLead].
type NewDeal struct {
	ContactID int64  `json:"contact_id"`
	Title     string `json:"title"`
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
	Stage     Stage  `json:"stage,omitempty"`
}

// Limits shared by [ContactFilter] and [DealFilter].
const (
	DefaultLimit = 50  // used when Limit is 0
	MaxLimit     = 200 // the largest Limit accepted
)

// ContactFilter selects contacts for [Store.ListContacts] and
// [Store.CountRestricted].
type ContactFilter struct {
	// Query, if not empty, keeps contacts whose name, email, company or sector
	// contains it, ignoring case (on SQLite, of ASCII letters only, as its
	// LIKE does; on Postgres, of every letter).
	// % and _ are ordinary characters here, not wildcards.
	Query string
	// Limit caps the number of contacts returned: 0 means DefaultLimit,
	// otherwise 1 to MaxLimit.
	Limit int
	// Offset skips that many matching contacts, in id order.
	Offset int
	// IncludeRestricted lets restricted contacts into the result. Leave it
	// false unless the caller has cleared step-up for restricted records.
	IncludeRestricted bool
}

// DealFilter selects deals for [Store.ListDeals]. The zero value lists the
// first DefaultLimit deals of non-restricted contacts.
type DealFilter struct {
	// Stage, if not empty, keeps deals at that stage.
	Stage Stage
	// ContactID, if not zero, keeps deals with that contact.
	ContactID int64
	// Limit caps the number of deals returned: 0 means DefaultLimit,
	// otherwise 1 to MaxLimit.
	Limit int
	// IncludeRestricted lets in deals whose contact is restricted. Leave it
	// false unless the caller has cleared step-up for restricted records.
	IncludeRestricted bool
}
