package tools

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/stepup"
)

// A write answers with what it wrote and nothing else. Answering with the
// whole record would make every write a read: an update that sets one
// field of a restricted contact would hand the agent the email, phone and
// owner it never asked for (and, before empty updates were refused, an
// update that set nothing did exactly that). So the answer names the record
// by the label the approver saw on the phone (the action sentence's
// object, the same string) and lists the fields the write set, as stored.

// ContactWritten is the output of create_contact and update_contact.
type ContactWritten struct {
	// Created or Updated names the record. For an update it is the label
	// the push showed, from the read that decided the call, so it keeps
	// the old name if the update renamed the contact. A create has no
	// record to show before it runs; its label names the new one.
	Created string `json:"created,omitempty" jsonschema:"the contact created, as 'contact #id name (company)'"`
	Updated string `json:"updated,omitempty" jsonschema:"the contact updated, by the label the approval showed"`
	ID      int64  `json:"id" jsonschema:"the contact's id"`
	// Changed holds the fields the write set, as stored (trimmed, sector
	// in lower case); the others are left out.
	Changed ContactFields `json:"changed" jsonschema:"the fields the call set, as stored; fields it did not set are left out"`
}

// ContactFields are a contact's fields a write set; nil was not set.
type ContactFields struct {
	Name           *string `json:"name,omitempty"`
	Email          *string `json:"email,omitempty"`
	Phone          *string `json:"phone,omitempty"`
	Company        *string `json:"company,omitempty"`
	Sector         *string `json:"sector,omitempty"`
	Classification *string `json:"classification,omitempty"`
	Owner          *string `json:"owner,omitempty"`
}

// DealWritten is the output of create_deal and update_deal_stage.
type DealWritten struct {
	// Created or Updated is the label the push showed: "a deal of 1.50
	// GBP for contact #6 …" or "deal #4 "…" of 220,000.00 GBP with contact
	// #6 …". It is computed the same way whether or not a push was sent.
	Created string `json:"created,omitempty" jsonschema:"the deal created, by the label the approval showed"`
	Updated string `json:"updated,omitempty" jsonschema:"the deal updated, by the label the approval showed"`
	ID      int64  `json:"id" jsonschema:"the deal's id"`
	// Changed holds the fields the write set, as stored.
	Changed DealFields `json:"changed" jsonschema:"the fields the call set, as stored; fields it did not set are left out"`
}

// DealFields are a deal's fields a write set; nil was not set.
type DealFields struct {
	ContactID *int64  `json:"contact_id,omitempty"`
	Title     *string `json:"title,omitempty"`
	Amount    *int64  `json:"amount,omitempty" jsonschema:"in minor units (cents)"`
	Currency  *string `json:"currency,omitempty"`
	Stage     *string `json:"stage,omitempty"`
}

// contactFieldNames is every field update_contact can set, in the order
// the tool error lists them.
const contactFieldNames = "name, email, phone, company, sector, classification, owner"

// errNothingToChange refuses an update that sets no field. It depends on
// the request alone: it is given before the record is read or a push is
// sent, whatever the id names.
var errNothingToChange = toolError("nothing to change: set at least one of " + contactFieldNames + " (fields left out stay as they are)")

// errReclassified is the answer to a write whose push depended on a
// record's classification when the record (or the deal's contact) was
// reclassified before the write: the store checked in the write's own
// statement (crm.ErrChanged) and wrote nothing.
func errReclassified(what string) error {
	return toolError("the " + what + " was reclassified while the call waited, so nothing was written; call again")
}

// writtenLabel is how a write's answer names its record. The label the
// push showed holds stored data (a contact's name and company, a deal's
// title and amount) that a token allowed to write may not be allowed to
// read: with only crm.deals.write, moving a deal to the stage it is
// already in would otherwise read the deal and its contact. So the answer
// carries that label only when the token grants the read scopes of what
// it shows; otherwise it names the record by what the request gave (its
// id). Decided from the token, never from the record.
func writtenLabel(c *govern.Call, label, fromRequest string, read ...string) string {
	for _, s := range read {
		if c.Token == nil || !resourceserver.HasScope(c.Token.Scopes, s) {
			return fromRequest
		}
	}
	return label
}

// contactTarget labels a stored contact as a push's action shows it:
// "contact #6 Riley Vance (Aegis Defence Systems)".
func contactTarget(c *crm.Contact) string { return "contact " + contactLabel(c) }

// dealTarget labels a stored deal as a push's action shows it: `deal #3
// "Trading desk data feed" of 95,000.00 GBP with contact #3 Priya Raman
// (Ledgerstone Capital)`.
func dealTarget(d *crm.Deal, c *crm.Contact) string {
	return fmt.Sprintf(`deal #%d "%s" of %s with contact %s`, d.ID, label(d.Title), money(d.Amount, d.Currency), contactLabel(c))
}

// newDealTarget labels a deal not yet written as create_deal's push shows
// it: "a deal of 1.50 GBP for contact #6 Riley Vance (Aegis Defence
// Systems)".
func newDealTarget(amount int64, currency string, c *crm.Contact) string {
	return "a deal of " + money(amount, currency) + " for contact " + contactLabel(c)
}

// setContact is the fields of got that in set, as stored.
func setContact(got crm.Contact, in UpdateContactIn) ContactFields {
	pick := func(given *string, stored string) *string {
		if given == nil {
			return nil
		}
		return &stored
	}
	return ContactFields{
		Name:           pick(in.Name, got.Name),
		Email:          pick(in.Email, got.Email),
		Phone:          pick(in.Phone, got.Phone),
		Company:        pick(in.Company, got.Company),
		Sector:         pick(in.Sector, got.Sector),
		Classification: pick(in.Classification, string(got.Classification)),
		Owner:          pick(in.Owner, got.Owner),
	}
}

// allContact is every field of a contact just created: a create sets them
// all, the defaults included.
func allContact(got crm.Contact) ContactFields {
	cl := string(got.Classification)
	return ContactFields{Name: &got.Name, Email: &got.Email, Phone: &got.Phone, Company: &got.Company, Sector: &got.Sector, Classification: &cl, Owner: &got.Owner}
}

// text is the answer as the model reads it, saying what the structured
// answer says: `Updated contact #6 Riley Vance (Aegis Defence Systems):
// owner "Mallory".`
func (w ContactWritten) text() string {
	f := w.Changed
	return written(w.Created, w.Updated, []field{
		{"name", quote(f.Name)}, {"email", quote(f.Email)}, {"phone", quote(f.Phone)}, {"company", quote(f.Company)},
		{"sector", quote(f.Sector)}, {"classification", quote(f.Classification)}, {"owner", quote(f.Owner)},
	})
}

func (w DealWritten) text() string {
	f := w.Changed
	num := func(v *int64) string {
		if v == nil {
			return ""
		}
		return strconv.FormatInt(*v, 10)
	}
	id := "" // an update's label has the id already
	if w.Created != "" {
		id = "#" + strconv.FormatInt(w.ID, 10)
	}
	return written(w.Created, w.Updated, []field{
		{"deal", id},
		{"contact_id", num(f.ContactID)}, {"title", quote(f.Title)}, {"amount", num(f.Amount)},
		{"currency", quote(f.Currency)}, {"stage", quote(f.Stage)},
	})
}

// field is one field of a write's text; an empty value was not set.
type field struct{ key, value string }

func written(created, updated string, fields []field) string {
	var b strings.Builder
	if created != "" {
		b.WriteString("Created " + created)
	} else {
		b.WriteString("Updated " + updated)
	}
	sep := ": "
	for _, f := range fields {
		if f.value == "" {
			continue
		}
		b.WriteString(sep + f.key + " " + f.value)
		sep = ", "
	}
	b.WriteString(".")
	return b.String()
}

// quote is a set value as the text shows it, Go-quoted so that nothing
// stored can end the sentence or hide; "" for a field not set.
func quote(v *string) string {
	if v == nil {
		return ""
	}
	return strconv.Quote(*v)
}

// maxLabel bounds a stored name in a label, as govern cuts a stored value
// in an action sentence, so that an answer names the record exactly as
// the push did.
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

// money formats an amount in minor units: 1200000 EUR is "12,000.00 EUR",
// as govern's templates show it.
func money(amount int64, currency string) string {
	return govern.MinorUnits(amount) + " " + stepup.Display(currency)
}
