package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	scopeContactsRead  = "crm.contacts.read"
	scopeContactsWrite = "crm.contacts.write"
	scopeDealsRead     = "crm.deals.read"
	scopeDealsWrite    = "crm.deals.write"
)

// The inputs and outputs are crm-mcp's (tools/contacts.go, tools/deals.go).
type listContactsIn struct {
	Query             string `json:"query,omitempty" jsonschema:"text to look for in name, email, company or sector (case-insensitive); empty lists everyone"`
	Limit             int    `json:"limit,omitempty" jsonschema:"maximum number of contacts to return, 1 to 200 (default 50)"`
	Offset            int    `json:"offset,omitempty" jsonschema:"number of contacts to skip, for paging"`
	IncludeRestricted bool   `json:"include_restricted,omitempty" jsonschema:"also return contacts classified restricted"`
}

type contactList struct {
	Contacts           []contact `json:"contacts"`
	WithheldRestricted int       `json:"withheld_restricted"`
}

type contactID struct {
	ID int64 `json:"id" jsonschema:"the contact's id, as shown by list_contacts"`
}

type createContactIn struct {
	Name           string `json:"name" jsonschema:"full name"`
	Email          string `json:"email" jsonschema:"email address, like name@example.com"`
	Phone          string `json:"phone,omitempty" jsonschema:"phone number"`
	Company        string `json:"company,omitempty" jsonschema:"company name"`
	Sector         string `json:"sector,omitempty" jsonschema:"industry sector, e.g. technology, healthcare, finance"`
	Classification string `json:"classification,omitempty" jsonschema:"public, internal (default) or restricted"`
	Owner          string `json:"owner,omitempty" jsonschema:"account owner; defaults to the signed-in user"`
}

type updateContactIn struct {
	ID             int64   `json:"id" jsonschema:"the contact's id"`
	Name           *string `json:"name,omitempty" jsonschema:"new full name"`
	Email          *string `json:"email,omitempty" jsonschema:"new email address"`
	Phone          *string `json:"phone,omitempty" jsonschema:"new phone number"`
	Company        *string `json:"company,omitempty" jsonschema:"new company name"`
	Sector         *string `json:"sector,omitempty" jsonschema:"new sector"`
	Classification *string `json:"classification,omitempty" jsonschema:"new classification: public, internal or restricted"`
	Owner          *string `json:"owner,omitempty" jsonschema:"new account owner"`
}

type listDealsIn struct {
	Stage             string `json:"stage,omitempty" jsonschema:"only deals in this stage: lead, qualified, proposal, negotiation, won or lost"`
	ContactID         int64  `json:"contact_id,omitempty" jsonschema:"only deals of this contact"`
	Limit             int    `json:"limit,omitempty" jsonschema:"maximum number of deals, 1 to 200 (default 50)"`
	IncludeRestricted bool   `json:"include_restricted,omitempty" jsonschema:"also return deals of restricted contacts"`
}

type dealList struct {
	Deals []deal `json:"deals"`
}

type createDealIn struct {
	ContactID int64  `json:"contact_id" jsonschema:"the contact the deal is with"`
	Title     string `json:"title" jsonschema:"short title of the deal"`
	Amount    int64  `json:"amount" jsonschema:"amount in minor units (cents): 1250000 means 12,500.00"`
	Currency  string `json:"currency" jsonschema:"ISO 4217 code such as USD, EUR or GBP"`
	Stage     string `json:"stage,omitempty" jsonschema:"initial stage (default lead)"`
}

type updateDealStageIn struct {
	ID    int64  `json:"id" jsonschema:"the deal's id, as shown by list_deals"`
	Stage string `json:"stage" jsonschema:"new stage: lead, qualified, proposal, negotiation, won or lost"`
}

// requireScope fails a call whose token lacks scope; go-sdk's middleware
// checks only scopes common to the whole endpoint.
func requireScope(req *mcp.CallToolRequest, scope string) error {
	if ti := req.Extra.TokenInfo; ti != nil && slices.Contains(ti.Scopes, scope) {
		return nil
	}
	return fmt.Errorf("this call needs the %s scope", scope)
}

func subject(req *mcp.CallToolRequest) string {
	if ti := req.Extra.TokenInfo; ti != nil {
		return ti.UserID
	}
	return ""
}

func set(dst *string, src *string) {
	if src != nil {
		*dst = *src
	}
}

// addTools registers the seven tools the way go-sdk's documentation shows:
// typed handlers with mcp.AddTool, schemas inferred from the types,
// results returned as the typed output (the SDK fills in the content).
func addTools(server *mcp.Server, s *store) {
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true}
	mcp.AddTool(server, &mcp.Tool{Name: "list_contacts", Title: "List contacts", Annotations: readOnly,
		Description: "List CRM contacts, optionally filtered by a search text."},
		func(ctx context.Context, req *mcp.CallToolRequest, in listContactsIn) (*mcp.CallToolResult, contactList, error) {
			if err := requireScope(req, scopeContactsRead); err != nil {
				return nil, contactList{}, err
			}
			cs, withheld, err := s.listContacts(in.Query, in.Limit, in.Offset, in.IncludeRestricted)
			return nil, contactList{Contacts: cs, WithheldRestricted: withheld}, err
		})
	mcp.AddTool(server, &mcp.Tool{Name: "get_contact", Title: "Get a contact", Annotations: readOnly,
		Description: "Get one CRM contact by id."},
		func(ctx context.Context, req *mcp.CallToolRequest, in contactID) (*mcp.CallToolResult, contact, error) {
			if err := requireScope(req, scopeContactsRead); err != nil {
				return nil, contact{}, err
			}
			c, err := s.getContact(in.ID)
			return nil, c, err
		})
	mcp.AddTool(server, &mcp.Tool{Name: "create_contact", Title: "Create a contact",
		Description: "Create a CRM contact. name and email are required."},
		func(ctx context.Context, req *mcp.CallToolRequest, in createContactIn) (*mcp.CallToolResult, contact, error) {
			if err := requireScope(req, scopeContactsWrite); err != nil {
				return nil, contact{}, err
			}
			if in.Owner == "" {
				in.Owner = subject(req)
			}
			c, err := s.createContact(contact{Name: in.Name, Email: in.Email, Phone: in.Phone, Company: in.Company,
				Sector: in.Sector, Classification: in.Classification, Owner: in.Owner})
			return nil, c, err
		})
	mcp.AddTool(server, &mcp.Tool{Name: "update_contact", Title: "Update a contact",
		Description: "Change fields of a CRM contact; fields left out stay as they are."},
		func(ctx context.Context, req *mcp.CallToolRequest, in updateContactIn) (*mcp.CallToolResult, contact, error) {
			if err := requireScope(req, scopeContactsWrite); err != nil {
				return nil, contact{}, err
			}
			c, err := s.updateContact(in.ID, func(c *contact) {
				set(&c.Name, in.Name)
				set(&c.Email, in.Email)
				set(&c.Phone, in.Phone)
				set(&c.Company, in.Company)
				set(&c.Sector, in.Sector)
				set(&c.Classification, in.Classification)
				set(&c.Owner, in.Owner)
			})
			return nil, c, err
		})
	mcp.AddTool(server, &mcp.Tool{Name: "list_deals", Title: "List deals", Annotations: readOnly,
		Description: "List CRM deals, optionally only one stage or one contact's."},
		func(ctx context.Context, req *mcp.CallToolRequest, in listDealsIn) (*mcp.CallToolResult, dealList, error) {
			if err := requireScope(req, scopeDealsRead); err != nil {
				return nil, dealList{}, err
			}
			ds, err := s.listDeals(strings.ToLower(strings.TrimSpace(in.Stage)), in.ContactID, in.Limit, in.IncludeRestricted || in.ContactID != 0)
			return nil, dealList{Deals: ds}, err
		})
	mcp.AddTool(server, &mcp.Tool{Name: "create_deal", Title: "Create a deal",
		Description: "Create a deal with a contact."},
		func(ctx context.Context, req *mcp.CallToolRequest, in createDealIn) (*mcp.CallToolResult, deal, error) {
			if err := requireScope(req, scopeDealsWrite); err != nil {
				return nil, deal{}, err
			}
			d, err := s.createDeal(deal{ContactID: in.ContactID, Title: in.Title, Amount: in.Amount, Currency: in.Currency,
				Stage: strings.ToLower(strings.TrimSpace(in.Stage))})
			return nil, d, err
		})
	mcp.AddTool(server, &mcp.Tool{Name: "update_deal_stage", Title: "Move a deal to another stage",
		Description: "Set the stage of a deal."},
		func(ctx context.Context, req *mcp.CallToolRequest, in updateDealStageIn) (*mcp.CallToolResult, deal, error) {
			if err := requireScope(req, scopeDealsWrite); err != nil {
				return nil, deal{}, err
			}
			d, err := s.updateDealStage(in.ID, strings.ToLower(strings.TrimSpace(in.Stage)))
			return nil, d, err
		})
}
