package tools

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/govern"
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

// Validate refuses a contact the store would refuse, before anything is
// decided, so no push is sent for it.
func (in CreateContactIn) Validate() error {
	_, err := crm.NewContact{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company, Sector: in.Sector,
		Classification: crm.Classification(in.Classification), Owner: in.Owner}.Validate()
	return storeError(err)
}

// Normalize returns the contact as the store will write it (trimmed,
// sector and classification in lower case), so the push shows exactly
// that; a classification left out stays out (the push says the default).
func (in CreateContactIn) Normalize() (CreateContactIn, error) {
	nc, err := crm.NewContact{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company, Sector: in.Sector,
		Classification: crm.Classification(in.Classification), Owner: in.Owner}.Validate()
	if err != nil {
		return in, storeError(err)
	}
	out := CreateContactIn{Name: nc.Name, Email: nc.Email, Phone: nc.Phone, Company: nc.Company, Sector: nc.Sector, Owner: nc.Owner}
	if in.Classification != "" {
		out.Classification = string(nc.Classification)
	}
	return out, nil
}

// Normalize returns the fields the update sets as the store will write
// them, so the push shows exactly that.
func (in UpdateContactIn) Normalize() (UpdateContactIn, error) {
	var cl *crm.Classification
	if in.Classification != nil {
		c := crm.Classification(*in.Classification)
		cl = &c
	}
	u, err := crm.ContactUpdate{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company, Sector: in.Sector, Classification: cl, Owner: in.Owner}.Validate()
	if err != nil {
		return in, storeError(err)
	}
	out := UpdateContactIn{ID: in.ID, Name: u.Name, Email: u.Email, Phone: u.Phone, Company: u.Company, Sector: u.Sector, Owner: u.Owner}
	if u.Classification != nil {
		out.Classification = ptr(string(*u.Classification))
	}
	return out, nil
}

// Validate refuses an update that sets nothing (a write that sets nothing
// would be a read that costs a push: refused from the request alone,
// before the record is read) or that the store would refuse.
func (in UpdateContactIn) Validate() error {
	if (in == UpdateContactIn{ID: in.ID}) {
		return errNothingToChange
	}
	var cl *crm.Classification
	if in.Classification != nil {
		c := crm.Classification(*in.Classification)
		cl = &c
	}
	_, err := crm.ContactUpdate{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company, Sector: in.Sector, Classification: cl, Owner: in.Owner}.Validate()
	return storeError(err)
}

// asksRestricted is the StepUp of a request that asks for restricted data
// by itself: such a call needs approval whatever the data holds.
const reasonAsks = "the call asks for restricted records"

// contactName is a contact named by a policy's record, as the push's
// sentence shows it: "#3 Priya Raman (Ledgerstone Capital)".
const contactName = `#{{.record.fields.id}} {{.record.fields.name}}{{if .record.fields.company}} ({{.record.fields.company}}){{end}}`

var (
	listContactsPolicy = govern.Policy{
		Scopes: []string{ScopeContactsRead},
		StepUp: govern.StepUp{TermsIn: []string{"*"}, WhenArgumentIs: map[string][]any{"include_restricted": {true}}, Reason: reasonAsks},
		Action: `{{if .query}}Search contacts for {{quote .query}}{{else}}List contacts{{end}}`,
		Rows:   []govern.Row{{Key: "restricted", New: "included"}, {Key: "limit", Arg: "limit"}, {Key: "offset", Arg: "offset"}},
	}
	getContactPolicy = govern.Policy{
		Scopes: []string{ScopeContactsRead},
		StepUp: govern.StepUp{TermsIn: []string{"*"}},
		Record: &govern.RecordRef{Arg: "id", Kind: kindContact},
		Action: "Show contact " + contactName,
	}
	createContactPolicy = govern.Policy{
		Scopes: []string{ScopeContactsWrite},
		Writes: true,
		StepUp: govern.StepUp{TermsIn: []string{"*"}, WhenArgumentIs: map[string][]any{"classification": {string(crm.Restricted)}}, Reason: reasonAsks},
		Action: "Create a contact",
		Rows: []govern.Row{
			{Key: "name", New: "{{.name}}"}, {Key: "email", New: "{{.email}}"}, {Key: "phone", New: "{{.phone}}"},
			{Key: "company", New: "{{.company}}"}, {Key: "sector", New: "{{.sector}}"},
			{Key: "classification", New: "{{if .classification}}{{.classification}}{{else}}internal (default){{end}}"},
			{Key: "owner", New: "{{if .owner}}{{.owner}}{{else}}you (the signed-in user){{end}}"},
		},
	}
	updateContactPolicy = govern.Policy{
		Scopes: []string{ScopeContactsWrite},
		Writes: true,
		StepUp: govern.StepUp{TermsIn: []string{"*"}, WhenArgumentIs: map[string][]any{"classification": {string(crm.Restricted)}}, Reason: reasonAsks},
		Record: &govern.RecordRef{Arg: "id", Kind: kindContact},
		Action: "Update contact " + contactName,
		Rows: []govern.Row{
			{Key: "name", Arg: "name", Old: "name"}, {Key: "email", Arg: "email", Old: "email"}, {Key: "phone", Arg: "phone", Old: "phone"},
			{Key: "company", Arg: "company", Old: "company"}, {Key: "sector", Arg: "sector", Old: "sector"},
			{Key: "classification", Arg: "classification", Old: "classification"}, {Key: "owner", Arg: "owner", Old: "owner"},
		},
	}
)

func contactTools() []tool {
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: ptr(false)}
	return []tool{
		{"list_contacts", listContactsPolicy, func(g *govern.Governor, s *mcp.Server, store *crm.Store) {
			govern.AddTool(g, s, &mcp.Tool{
				Name:  "list_contacts",
				Title: "List contacts",
				Description: "List CRM contacts, optionally filtered by a search text. Restricted contacts are left out; " +
					"include_restricted: true asks for them, which needs the user's approval on their phone (Duo Push). " +
					"A search that mentions a sensitive term needs approval too, and once approved returns the restricted contacts it matches.",
				Annotations: readOnly,
				Meta:        scopesMeta(listContactsPolicy),
			}, listContactsPolicy, func(ctx context.Context, c *govern.Call, in ListContactsIn) (*mcp.CallToolResult, ContactList, error) {
				return listContacts(ctx, store, c, in)
			})
		}},
		{"get_contact", getContactPolicy, func(g *govern.Governor, s *mcp.Server, store *crm.Store) {
			govern.AddTool(g, s, &mcp.Tool{
				Name:        "get_contact",
				Title:       "Get a contact",
				Description: "Get one CRM contact by id. A restricted contact needs the user's approval (Duo Push).",
				Annotations: readOnly,
				Meta:        scopesMeta(getContactPolicy),
			}, getContactPolicy, func(ctx context.Context, c *govern.Call, in ContactID) (*mcp.CallToolResult, crm.Contact, error) {
				got := *c.Record.Value.(*crm.Contact)
				if c.Approved {
					// The approval may have taken a minute: answer with the
					// record as it is now.
					var err error
					if got, err = store.GetContact(ctx, in.ID); err != nil {
						return nil, crm.Contact{}, storeError(err)
					}
					if err := mayShow(c, got.Classification); err != nil {
						return nil, crm.Contact{}, err
					}
				}
				return text(describeContact(got)), got, nil
			})
		}},
		{"create_contact", createContactPolicy, func(g *govern.Governor, s *mcp.Server, store *crm.Store) {
			govern.AddTool(g, s, &mcp.Tool{
				Name:        "create_contact",
				Title:       "Create a contact",
				Description: "Create a CRM contact. name and email are required. Answers with the new contact's id and the fields as stored.",
				Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
				Meta:        scopesMeta(createContactPolicy),
			}, createContactPolicy, func(ctx context.Context, c *govern.Call, in CreateContactIn) (*mcp.CallToolResult, ContactWritten, error) {
				nc := crm.NewContact{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company, Sector: in.Sector, Owner: in.Owner}
				if in.Classification != "" {
					cl, err := crm.ParseClassification(in.Classification)
					if err != nil {
						return nil, ContactWritten{}, storeError(err)
					}
					nc.Classification = cl
				}
				if nc.Owner == "" {
					nc.Owner = c.Token.Subject
				}
				got, err := store.CreateContact(ctx, nc)
				if err != nil {
					return nil, ContactWritten{}, storeError(err)
				}
				// Every field is one the call set (or its default).
				out := ContactWritten{Created: contactTarget(&got), ID: got.ID, Changed: allContact(got)}
				return text(out.text()), out, nil
			})
		}},
		{"update_contact", updateContactPolicy, func(g *govern.Governor, s *mcp.Server, store *crm.Store) {
			govern.AddTool(g, s, &mcp.Tool{
				Name:        "update_contact",
				Title:       "Update a contact",
				Description: "Change fields of a CRM contact; fields left out stay as they are, and at least one must be set. Answers with the fields it changed, not the whole record.",
				Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)},
				Meta:        scopesMeta(updateContactPolicy),
			}, updateContactPolicy, func(ctx context.Context, c *govern.Call, in UpdateContactIn) (*mcp.CallToolResult, ContactWritten, error) {
				old := c.Record.Value.(*crm.Contact)
				u := crm.ContactUpdate{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company, Sector: in.Sector, Owner: in.Owner}
				if in.Classification != nil {
					cl, err := crm.ParseClassification(*in.Classification)
					if err != nil {
						return nil, ContactWritten{}, storeError(err)
					}
					u.Classification = &cl
				}
				// Written only while the record is classified as it was when
				// the call was decided (and shown to the approver).
				got, err := store.UpdateContactIf(ctx, in.ID, u, old.Classification)
				if errors.Is(err, crm.ErrChanged) {
					return nil, ContactWritten{}, errReclassified("contact")
				}
				if err != nil {
					return nil, ContactWritten{}, storeError(err)
				}
				// The answer holds only what the call set, so nothing of
				// the record it did not ask to see leaves the server.
				out := ContactWritten{Updated: writtenLabel(c, contactTarget(old), fmt.Sprintf("contact #%d", old.ID), ScopeContactsRead), ID: got.ID, Changed: setContact(got, in)}
				return text(out.text()), out, nil
			})
		}},
	}
}

// listContacts answers list_contacts. Restricted contacts are returned
// only to a call that needed approval and got it; a search that was not
// approved simply leaves them out, and says so whatever matched.
func listContacts(ctx context.Context, store *crm.Store, c *govern.Call, in ListContactsIn) (*mcp.CallToolResult, ContactList, error) {
	f := crm.ContactFilter{Query: in.Query, Limit: in.Limit, Offset: in.Offset, IncludeRestricted: c.Approved}
	var out ContactList
	var err error
	if !c.Approved && in.Query == "" {
		// The total withheld by a plain listing depends on no input, so
		// it tells nothing a question could steer. One query reads the
		// page and the total.
		var n int
		if out.Contacts, n, err = store.ListContactsWithheld(ctx, f); err != nil {
			return nil, ContactList{}, storeError(err)
		}
		out.WithheldRestricted = &n
		out.Note = fmt.Sprintf("%d restricted contact(s) withheld. %s", n, noteContacts)
	} else {
		if out.Contacts, err = store.ListContacts(ctx, f); err != nil {
			return nil, ContactList{}, storeError(err)
		}
		if !c.Approved {
			out.Note = noteContacts
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d contact(s)", len(out.Contacts))
	if in.Query != "" {
		fmt.Fprintf(&b, " matching %q", in.Query)
	}
	b.WriteString(":\n")
	for _, c := range out.Contacts {
		fmt.Fprintf(&b, "- #%d %s <%s>, %s (%s, %s)\n", c.ID, c.Name, c.Email, c.Company, c.Sector, c.Classification)
	}
	if out.Note != "" {
		b.WriteString(out.Note + "\n")
	}
	return text(b.String()), out, nil
}

// mayShow refuses to return a record that is restricted now when the call
// was not approved for restricted data: one that another user made
// restricted while this call waited for its approval.
func mayShow(c *govern.Call, cl crm.Classification) error {
	if cl != crm.Restricted || c.ApprovedSensitive {
		return nil
	}
	return toolError("the record was classified restricted while the call ran, so its content is withheld; call again to ask for approval")
}

// scopesMeta advertises a tool's scopes in tools/list (_meta), so that a
// client can ask for them before its first call.
func scopesMeta(p govern.Policy) mcp.Meta {
	return mcp.Meta{"crm-mcp/scopes": p.Scopes}
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
