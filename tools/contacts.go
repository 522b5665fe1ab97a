package tools

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/resourceserver"
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
	// WithheldRestricted counts restricted contacts that matched but were
	// left out because include_restricted was not set.
	WithheldRestricted int `json:"withheld_restricted"`
}

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
			Description: "List CRM contacts, optionally filtered by a search text. A plain listing withholds restricted contacts and says how many; " +
				"include_restricted: true, or a search that matches a restricted contact, needs the user's approval on their phone (Duo Push) and then returns them.",
			Annotations: readOnly,
		}, scopes: []string{ScopeContactsRead},
			// A search names records, so it may return the restricted ones
			// it matches; a plain listing withholds them.
			restricted: func(ctx context.Context, in ListContactsIn) (bool, error) {
				if in.Query == "" && !in.IncludeRestricted {
					return false, nil
				}
				return d.store.MatchesRestricted(ctx, crm.ContactFilter{Query: in.Query})
			},
			probes: func(in ListContactsIn) bool { return in.Query != "" || in.IncludeRestricted },
			run: func(ctx context.Context, in ListContactsIn) (string, ContactList, error) {
				f := crm.ContactFilter{Query: in.Query, Limit: in.Limit, Offset: in.Offset, IncludeRestricted: in.IncludeRestricted || in.Query != ""}
				contacts, err := d.store.ListContacts(ctx, f)
				if err != nil {
					return "", ContactList{}, err
				}
				out := ContactList{Contacts: contacts}
				if !f.IncludeRestricted {
					if out.WithheldRestricted, err = d.store.CountRestricted(ctx, f); err != nil {
						return "", ContactList{}, err
					}
				}
				var b strings.Builder
				fmt.Fprintf(&b, "%d contact(s)", len(contacts))
				if in.Query != "" {
					fmt.Fprintf(&b, " matching %q", in.Query)
				}
				b.WriteString(":\n")
				for _, c := range contacts {
					fmt.Fprintf(&b, "- #%d %s <%s>, %s (%s, %s)\n", c.ID, c.Name, c.Email, c.Company, c.Sector, c.Classification)
				}
				if out.WithheldRestricted > 0 {
					fmt.Fprintf(&b, "%d restricted contact(s) withheld; call again with include_restricted: true to ask for them.\n", out.WithheldRestricted)
				}
				return b.String(), out, nil
			}}),

		define(d, toolDef[ContactID, crm.Contact]{tool: &mcp.Tool{
			Name:        "get_contact",
			Title:       "Get a contact",
			Description: "Get one CRM contact by id. A restricted contact needs the user's approval (Duo Push).",
			Annotations: readOnly,
		}, scopes: []string{ScopeContactsRead},
			restricted: func(ctx context.Context, in ContactID) (bool, error) { return d.contactRestricted(ctx, in.ID) },
			probes:     func(ContactID) bool { return true },
			run: func(ctx context.Context, in ContactID) (string, crm.Contact, error) {
				if in.ID <= 0 {
					return "", crm.Contact{}, &toolError{"id must be a positive contact id (see list_contacts)"}
				}
				c, err := d.store.GetContact(ctx, in.ID)
				if err != nil {
					return "", crm.Contact{}, err
				}
				return describeContact(c), c, nil
			}}),

		define(d, toolDef[CreateContactIn, crm.Contact]{tool: &mcp.Tool{
			Name:        "create_contact",
			Title:       "Create a contact",
			Description: "Create a CRM contact. name and email are required.",
			Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
		}, scopes: []string{ScopeContactsWrite}, writes: true,
			restricted: func(ctx context.Context, in CreateContactIn) (bool, error) {
				return isRestricted(in.Classification), nil
			},
			run: func(ctx context.Context, in CreateContactIn) (string, crm.Contact, error) {
				nc := crm.NewContact{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company, Sector: in.Sector, Owner: in.Owner}
				if in.Classification != "" {
					cl, err := crm.ParseClassification(in.Classification)
					if err != nil {
						return "", crm.Contact{}, err
					}
					nc.Classification = cl
				}
				if nc.Owner == "" {
					nc.Owner = subject(ctx)
				}
				c, err := d.store.CreateContact(ctx, nc)
				if err != nil {
					return "", crm.Contact{}, err
				}
				return "Created " + describeContact(c), c, nil
			}}),

		define(d, toolDef[UpdateContactIn, crm.Contact]{tool: &mcp.Tool{
			Name:        "update_contact",
			Title:       "Update a contact",
			Description: "Change fields of a CRM contact; fields left out stay as they are.",
			Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)},
		}, scopes: []string{ScopeContactsWrite}, writes: true,
			restricted: func(ctx context.Context, in UpdateContactIn) (bool, error) {
				if in.Classification != nil && isRestricted(*in.Classification) {
					return true, nil
				}
				return d.contactRestricted(ctx, in.ID)
			},
			probes: func(UpdateContactIn) bool { return true },
			run: func(ctx context.Context, in UpdateContactIn) (string, crm.Contact, error) {
				if in.ID <= 0 {
					return "", crm.Contact{}, &toolError{"id must be a positive contact id (see list_contacts)"}
				}
				u := crm.ContactUpdate{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company, Sector: in.Sector, Owner: in.Owner}
				if in.Classification != nil {
					cl, err := crm.ParseClassification(*in.Classification)
					if err != nil {
						return "", crm.Contact{}, err
					}
					u.Classification = &cl
				}
				c, err := d.store.UpdateContact(ctx, in.ID, u)
				if err != nil {
					return "", crm.Contact{}, err
				}
				return "Updated " + describeContact(c), c, nil
			}}),
	}
}

// contactRestricted asks the store whether contact id is restricted. An
// unknown id is not restricted: the tool will say it does not exist.
func (d *deps) contactRestricted(ctx context.Context, id int64) (bool, error) {
	if id <= 0 {
		return false, nil
	}
	c, err := d.store.GetContact(ctx, id)
	if errors.Is(err, crm.ErrNotFound) {
		return false, nil
	}
	return c.Classification == crm.Restricted, err
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

// subject is the signed-in user, from the verified token.
func subject(ctx context.Context) string {
	if t := resourceserver.TokenFromContext(ctx); t != nil {
		return t.Subject
	}
	return ""
}
