package tools

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/stepup"
)

// ListContactsIn is the input of list_contacts.
type ListContactsIn struct {
	Query             string `json:"query,omitempty" jsonschema:"text to look for in name, email, company or sector (case-insensitive); empty lists everyone"`
	Limit             int    `json:"limit,omitempty" jsonschema:"maximum number of contacts to return, 1 to 200 (default 50)"`
	Offset            int    `json:"offset,omitempty" jsonschema:"number of contacts to skip, for paging"`
	IncludeRestricted bool   `json:"include_restricted,omitempty" jsonschema:"also return contacts classified restricted"`
}

// ContactList is the output of list_contacts.
type ContactList struct {
	Contacts []crm.Contact `json:"contacts"`
	// WithheldRestricted counts the restricted contacts a plain listing
	// (no query) left out, because it was not approved to show them. A
	// search never reports a count: how many restricted contacts match a
	// text is what the restricted records hold.
	WithheldRestricted *int `json:"withheld_restricted,omitempty"`
	// Note says what was left out and how to ask for it.
	Note string `json:"note,omitempty"`
}

// noteContacts is what every list_contacts answer that was not approved
// says, whatever matched.
const noteContacts = "Restricted contacts are left out unless you call again with include_restricted: true, which always needs the user's approval on their phone (Duo Push)."

// ContactID names one contact.
type ContactID struct {
	ID int64 `json:"id" jsonschema:"the contact's id, as shown by list_contacts"`
}

// CreateContactIn is the input of create_contact.
type CreateContactIn struct {
	Name           string `json:"name" jsonschema:"full name"`
	Email          string `json:"email" jsonschema:"email address, like name@example.com"`
	Phone          string `json:"phone,omitempty" jsonschema:"phone number"`
	Company        string `json:"company,omitempty" jsonschema:"company name"`
	Sector         string `json:"sector,omitempty" jsonschema:"industry sector, e.g. technology, healthcare, finance"`
	Classification string `json:"classification,omitempty" jsonschema:"public, internal (default) or restricted"`
	Owner          string `json:"owner,omitempty" jsonschema:"account owner; defaults to the signed-in user"`
}

// UpdateContactIn is the input of update_contact: only the fields given
// change.
type UpdateContactIn struct {
	ID             int64   `json:"id" jsonschema:"the contact's id"`
	Name           *string `json:"name,omitempty" jsonschema:"new full name"`
	Email          *string `json:"email,omitempty" jsonschema:"new email address"`
	Phone          *string `json:"phone,omitempty" jsonschema:"new phone number"`
	Company        *string `json:"company,omitempty" jsonschema:"new company name"`
	Sector         *string `json:"sector,omitempty" jsonschema:"new sector"`
	Classification *string `json:"classification,omitempty" jsonschema:"new classification: public, internal or restricted"`
	Owner          *string `json:"owner,omitempty" jsonschema:"new account owner"`
}

func contactTools(d *deps) []spec {
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: ptr(false)}
	return []spec{
		define(d, toolDef[ListContactsIn, ContactList]{tool: &mcp.Tool{
			Name:  "list_contacts",
			Title: "List contacts",
			Description: "List CRM contacts, optionally filtered by a search text. Restricted contacts are left out; " +
				"include_restricted: true asks for them, which needs the user's approval on their phone (Duo Push). " +
				"A search that mentions a sensitive term needs approval too, and once approved returns the restricted contacts it matches.",
			Annotations: readOnly,
		}, scopes: []string{ScopeContactsRead},
			asks: func(in ListContactsIn) bool { return in.IncludeRestricted },
			describe: func(c *call[ListContactsIn]) (string, []stepup.Detail, error) {
				in := c.in
				action := "List contacts"
				if in.Query != "" {
					q, err := quoted("query", in.Query)
					if err != nil {
						return "", nil, err
					}
					action = "Search contacts for " + q
				}
				details := []stepup.Detail{{Key: "restricted", New: "included"}}
				return action, append(details, paging(in.Limit, in.Offset)...), nil
			},
			run: func(ctx context.Context, c *call[ListContactsIn]) (string, ContactList, error) {
				in := c.in
				f := crm.ContactFilter{Query: in.Query, Limit: in.Limit, Offset: in.Offset, IncludeRestricted: c.approved}
				var out ContactList
				var err error
				if !c.approved && in.Query == "" {
					// The total withheld by a plain listing depends on no
					// input, so it tells nothing a question could steer.
					// One query reads the page and the total.
					var n int
					if out.Contacts, n, err = d.store.ListContactsWithheld(ctx, f); err != nil {
						return "", ContactList{}, err
					}
					out.WithheldRestricted = &n
					out.Note = fmt.Sprintf("%d restricted contact(s) withheld. %s", n, noteContacts)
				} else {
					if out.Contacts, err = d.store.ListContacts(ctx, f); err != nil {
						return "", ContactList{}, err
					}
					if !c.approved {
						out.Note = noteContacts
					}
				}
				contacts := out.Contacts
				var b strings.Builder
				fmt.Fprintf(&b, "%d contact(s)", len(contacts))
				if in.Query != "" {
					fmt.Fprintf(&b, " matching %q", in.Query)
				}
				b.WriteString(":\n")
				for _, c := range contacts {
					fmt.Fprintf(&b, "- #%d %s <%s>, %s (%s, %s)\n", c.ID, c.Name, c.Email, c.Company, c.Sector, c.Classification)
				}
				if out.Note != "" {
					b.WriteString(out.Note + "\n")
				}
				return b.String(), out, nil
			}}),

		define(d, toolDef[ContactID, crm.Contact]{tool: &mcp.Tool{
			Name:        "get_contact",
			Title:       "Get a contact",
			Description: "Get one CRM contact by id. A restricted contact needs the user's approval (Duo Push).",
			Annotations: readOnly,
		}, scopes: []string{ScopeContactsRead},
			names: func(ctx context.Context, in ContactID) (target, error) { return d.namedContact(ctx, "id", in.ID) },
			describe: func(c *call[ContactID]) (string, []stepup.Detail, error) {
				return "Show contact " + contactLabel(c.target.contact), nil, nil
			},
			run: func(ctx context.Context, c *call[ContactID]) (string, crm.Contact, error) {
				got := *c.target.contact
				if c.approved {
					// The approval may have taken a minute: answer with the
					// record as it is now.
					var err error
					if got, err = d.store.GetContact(ctx, c.in.ID); err != nil {
						return "", crm.Contact{}, err
					}
					if err := c.mayShow(got.Classification); err != nil {
						return "", crm.Contact{}, err
					}
				}
				return describeContact(got), got, nil
			}}),

		define(d, toolDef[CreateContactIn, ContactWritten]{tool: &mcp.Tool{
			Name:        "create_contact",
			Title:       "Create a contact",
			Description: "Create a CRM contact. name and email are required. Answers with the new contact's id and the fields as stored.",
			Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
		}, scopes: []string{ScopeContactsWrite}, writes: true,
			asks: func(in CreateContactIn) bool { return isRestricted(in.Classification) },
			check: func(in CreateContactIn) (CreateContactIn, error) {
				nc, err := crm.NewContact{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company, Sector: in.Sector,
					Classification: crm.Classification(in.Classification), Owner: in.Owner}.Validate()
				if err != nil {
					return in, err
				}
				defaulted := in.Classification == ""
				in = CreateContactIn{Name: nc.Name, Email: nc.Email, Phone: nc.Phone, Company: nc.Company, Sector: nc.Sector, Classification: string(nc.Classification), Owner: nc.Owner}
				if defaulted {
					in.Classification = ""
				}
				return in, nil
			},
			describe: func(c *call[CreateContactIn]) (string, []stepup.Detail, error) {
				in := c.in
				cl := in.Classification
				if cl == "" {
					cl = string(crm.Internal) + " (default)"
				}
				owner := in.Owner
				if owner == "" {
					owner = c.tok.Subject + " (you)"
				}
				return "Create a contact", []stepup.Detail{
					{Key: "name", New: in.Name},
					{Key: "email", New: in.Email},
					{Key: "phone", New: in.Phone},
					{Key: "company", New: in.Company},
					{Key: "sector", New: in.Sector},
					{Key: "classification", New: cl},
					{Key: "owner", New: owner},
				}, nil
			},
			run: func(ctx context.Context, c *call[CreateContactIn]) (string, ContactWritten, error) {
				in := c.in
				nc := crm.NewContact{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company, Sector: in.Sector, Owner: in.Owner}
				if in.Classification != "" {
					cl, err := crm.ParseClassification(in.Classification)
					if err != nil {
						return "", ContactWritten{}, err
					}
					nc.Classification = cl
				}
				if nc.Owner == "" {
					nc.Owner = c.tok.Subject
				}
				got, err := d.store.CreateContact(ctx, nc)
				if err != nil {
					return "", ContactWritten{}, err
				}
				// Every field is one the call set (or its default).
				out := ContactWritten{Created: contactTarget(&got), ID: got.ID, Changed: allContact(got)}
				return out.text(), out, nil
			}}),

		define(d, toolDef[UpdateContactIn, ContactWritten]{tool: &mcp.Tool{
			Name:        "update_contact",
			Title:       "Update a contact",
			Description: "Change fields of a CRM contact; fields left out stay as they are, and at least one must be set. Answers with the fields it changed, not the whole record.",
			Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)},
		}, scopes: []string{ScopeContactsWrite}, writes: true,
			asks: func(in UpdateContactIn) bool { return in.Classification != nil && isRestricted(*in.Classification) },
			check: func(in UpdateContactIn) (UpdateContactIn, error) {
				if (in == UpdateContactIn{ID: in.ID}) {
					// A write that sets nothing would be a read that
					// costs a push: refused from the request alone,
					// before the record is read.
					return in, errNothingToChange
				}
				var cl *crm.Classification
				if in.Classification != nil {
					c := crm.Classification(*in.Classification)
					cl = &c
				}
				u, err := crm.ContactUpdate{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company, Sector: in.Sector, Classification: cl, Owner: in.Owner}.Validate()
				if err != nil {
					return in, err
				}
				out := UpdateContactIn{ID: in.ID, Name: u.Name, Email: u.Email, Phone: u.Phone, Company: u.Company, Sector: u.Sector, Owner: u.Owner}
				if u.Classification != nil {
					out.Classification = ptr(string(*u.Classification))
				}
				return out, nil
			},
			names: func(ctx context.Context, in UpdateContactIn) (target, error) { return d.namedContact(ctx, "id", in.ID) },
			describe: func(c *call[UpdateContactIn]) (string, []stepup.Detail, error) {
				in, old := c.in, c.target.contact
				var details []stepup.Detail
				change := func(key string, now string, v *string) {
					if v != nil {
						details = append(details, stepup.Detail{Key: key, Old: now, HasOld: true, New: *v})
					}
				}
				change("name", old.Name, in.Name)
				change("email", old.Email, in.Email)
				change("phone", old.Phone, in.Phone)
				change("company", old.Company, in.Company)
				change("sector", old.Sector, in.Sector)
				change("classification", string(old.Classification), in.Classification)
				change("owner", old.Owner, in.Owner)
				return "Update " + contactTarget(old), details, nil
			},
			run: func(ctx context.Context, c *call[UpdateContactIn]) (string, ContactWritten, error) {
				in := c.in
				u := crm.ContactUpdate{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company, Sector: in.Sector, Owner: in.Owner}
				if in.Classification != nil {
					cl, err := crm.ParseClassification(*in.Classification)
					if err != nil {
						return "", ContactWritten{}, err
					}
					u.Classification = &cl
				}
				// Written only while the record is classified as it was when
				// the call was decided (and shown to the approver).
				got, err := d.store.UpdateContactIf(ctx, in.ID, u, c.target.contact.Classification)
				if errors.Is(err, crm.ErrChanged) {
					return "", ContactWritten{}, errReclassified("contact")
				}
				if err != nil {
					return "", ContactWritten{}, err
				}
				// The answer holds only what the call set, so nothing of
				// the record it did not ask to see leaves the server.
				out := ContactWritten{Updated: contactTarget(c.target.contact), ID: got.ID, Changed: setContact(got, in)}
				return out.text(), out, nil
			}}),
	}
}

// namedContact reads the contact a call names. A malformed id is refused
// before the store is asked.
func (d *deps) namedContact(ctx context.Context, field string, id int64) (target, error) {
	if id <= 0 {
		return target{}, &toolError{field + " must be a positive contact id (see list_contacts)"}
	}
	c, err := d.store.GetContact(ctx, id)
	if errors.Is(err, crm.ErrNotFound) {
		return target{}, &toolError{fmt.Sprintf("%s %d: contact not found; check the id (list_contacts shows valid ids)", field, id)}
	}
	if err != nil {
		return target{}, err
	}
	return target{restricted: c.Classification == crm.Restricted, contact: &c}, nil
}

// paging shows limit and offset, when given, as rows of the push.
func paging(limit, offset int) []stepup.Detail {
	var out []stepup.Detail
	if limit != 0 {
		out = append(out, stepup.Detail{Key: "limit", New: strconv.Itoa(limit)})
	}
	if offset != 0 {
		out = append(out, stepup.Detail{Key: "offset", New: strconv.Itoa(offset)})
	}
	return out
}

// isRestricted reports whether a requested classification is restricted,
// however it is spelled.
func isRestricted(classification string) bool {
	cl, err := crm.ParseClassification(classification)
	return err == nil && cl == crm.Restricted
}

func describeContact(c crm.Contact) string {
	return fmt.Sprintf("contact #%d: %s <%s>, phone %s, %s (sector %s), classification %s, owner %s",
		c.ID, c.Name, c.Email, orNone(c.Phone), orNone(c.Company), orNone(c.Sector), c.Classification, orNone(c.Owner))
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
