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

// ListDealsIn is the input of list_deals.
type ListDealsIn struct {
	Stage             string `json:"stage,omitempty" jsonschema:"only deals in this stage: lead, qualified, proposal, negotiation, won or lost"`
	ContactID         int64  `json:"contact_id,omitempty" jsonschema:"only deals of this contact"`
	Limit             int    `json:"limit,omitempty" jsonschema:"maximum number of deals, 1 to 200 (default 50)"`
	IncludeRestricted bool   `json:"include_restricted,omitempty" jsonschema:"also return deals of restricted contacts"`
}

// DealList is the output of list_deals.
type DealList struct {
	Deals []crm.Deal `json:"deals"`
	// Note says what was left out and how to ask for it.
	Note string `json:"note,omitempty"`
}

// noteDeals is what every list_deals answer that was not approved says,
// whatever matched.
const noteDeals = "Deals of restricted contacts are left out unless you call again with include_restricted: true, which always needs the user's approval on their phone (Duo Push)."

// CreateDealIn is the input of create_deal.
type CreateDealIn struct {
	ContactID int64  `json:"contact_id" jsonschema:"the contact the deal is with"`
	Title     string `json:"title" jsonschema:"short title of the deal"`
	Amount    int64  `json:"amount" jsonschema:"amount in minor units (cents): 1250000 means 12,500.00"`
	Currency  string `json:"currency" jsonschema:"ISO 4217 code such as USD, EUR or GBP"`
	Stage     string `json:"stage,omitempty" jsonschema:"initial stage (default lead)"`
}

// UpdateDealStageIn is the input of update_deal_stage.
type UpdateDealStageIn struct {
	ID    int64  `json:"id" jsonschema:"the deal's id, as shown by list_deals"`
	Stage string `json:"stage" jsonschema:"new stage: lead, qualified, proposal, negotiation, won or lost"`
}

// Validate refuses a deal the store would refuse, before anything is
// decided, so no push is sent for it.
func (in CreateDealIn) Validate() error {
	_, err := crm.NewDeal{ContactID: in.ContactID, Title: in.Title, Amount: in.Amount, Currency: in.Currency, Stage: crm.Stage(in.Stage)}.Validate()
	return storeError(err)
}

// Normalize returns the deal as the store will write it (trimmed, the
// currency in upper case, the stage in lower case), so the push shows
// exactly that; a stage left out stays out (the push says the default).
func (in CreateDealIn) Normalize() (CreateDealIn, error) {
	d, err := crm.NewDeal{ContactID: in.ContactID, Title: in.Title, Amount: in.Amount, Currency: in.Currency, Stage: crm.Stage(in.Stage)}.Validate()
	if err != nil {
		return in, storeError(err)
	}
	out := CreateDealIn{ContactID: d.ContactID, Title: d.Title, Amount: d.Amount, Currency: d.Currency}
	if in.Stage != "" {
		out.Stage = string(d.Stage)
	}
	return out, nil
}

// Normalize returns the stage as the store writes it.
func (in UpdateDealStageIn) Normalize() (UpdateDealStageIn, error) {
	st, err := crm.ParseStage(in.Stage)
	if err != nil {
		return in, storeError(err)
	}
	in.Stage = string(st)
	return in, nil
}

// Validate refuses a stage that does not exist.
func (in UpdateDealStageIn) Validate() error {
	_, err := crm.ParseStage(in.Stage)
	return storeError(err)
}

// dealContactName is the contact of a deal record, as dealTarget names it.
const dealContactName = `#{{.record.fields.contact_id}} {{.record.fields.contact_name}}{{if .record.fields.contact_company}} ({{.record.fields.contact_company}}){{end}}`

var (
	listDealsPolicy = govern.Policy{
		Scopes: []string{ScopeDealsRead},
		StepUp: govern.StepUp{TermsIn: []string{"*"}, WhenArgumentIs: map[string][]any{"include_restricted": {true}}, Reason: reasonAsks},
		Record: &govern.RecordRef{Arg: "contact_id", Kind: kindContact, NonZero: true},
		Action: `{{if .record}}List deals of contact ` + contactName + `{{else}}List deals{{end}}`,
		Rows:   []govern.Row{{Key: "restricted", New: "included"}, {Key: "stage", Arg: "stage"}, {Key: "limit", Arg: "limit"}},
	}
	createDealPolicy = govern.Policy{
		Scopes: []string{ScopeDealsWrite},
		Writes: true,
		StepUp: govern.StepUp{TermsIn: []string{"*"}},
		Record: &govern.RecordRef{Arg: "contact_id", Kind: kindContact},
		Action: `Create a deal of {{money .amount .currency}} for contact ` + contactName,
		Rows: []govern.Row{
			{Key: "title", New: "{{.title}}"}, {Key: "amount", New: "{{.amount}} (minor units)"}, {Key: "currency", New: "{{.currency}}"},
			{Key: "stage", New: "{{if .stage}}{{.stage}}{{else}}lead (default){{end}}"},
		},
	}
	updateDealStagePolicy = govern.Policy{
		Scopes: []string{ScopeDealsWrite},
		Writes: true,
		StepUp: govern.StepUp{TermsIn: []string{"*"}},
		// The deal's record is restricted when its contact is.
		Record: &govern.RecordRef{Arg: "id", Kind: kindDeal},
		Action: `Move deal #{{.record.fields.id}} "{{.record.fields.title}}" of {{.record.fields.value}} with contact ` + dealContactName,
		Rows:   []govern.Row{{Key: "stage", Arg: "stage", Old: "stage"}},
	}
)

func dealTools() []tool {
	return []tool{
		{"list_deals", listDealsPolicy, func(g *govern.Governor, s *mcp.Server, store *crm.Store) {
			govern.AddTool(g, s, &mcp.Tool{
				Name:  "list_deals",
				Title: "List deals",
				Description: "List CRM deals, optionally only one stage or one contact's. Deals of restricted contacts are left out; " +
					"include_restricted: true, or the contact_id of a restricted contact, needs the user's approval (Duo Push) and then returns them.",
				Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: ptr(false)},
				Meta:        scopesMeta(listDealsPolicy),
			}, listDealsPolicy, func(ctx context.Context, c *govern.Call, in ListDealsIn) (*mcp.CallToolResult, DealList, error) {
				f := crm.DealFilter{ContactID: in.ContactID, Limit: in.Limit, IncludeRestricted: c.Approved}
				if in.Stage != "" {
					st, err := crm.ParseStage(in.Stage)
					if err != nil {
						return nil, DealList{}, storeError(err)
					}
					f.Stage = st
				}
				deals, err := store.ListDeals(ctx, f)
				if err != nil {
					return nil, DealList{}, storeError(err)
				}
				out := DealList{Deals: deals}
				if !c.Approved {
					out.Note = noteDeals
				}
				var b strings.Builder
				fmt.Fprintf(&b, "%d deal(s):\n", len(deals))
				for _, dl := range deals {
					fmt.Fprintf(&b, "- %s\n", describeDeal(dl))
				}
				if out.Note != "" {
					b.WriteString(out.Note + "\n")
				}
				return text(b.String()), out, nil
			})
		}},
		{"create_deal", createDealPolicy, func(g *govern.Governor, s *mcp.Server, store *crm.Store) {
			govern.AddTool(g, s, &mcp.Tool{
				Name:        "create_deal",
				Title:       "Create a deal",
				Description: "Create a deal with a contact. Answers with the new deal's id and the fields as stored.",
				Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
				Meta:        scopesMeta(createDealPolicy),
			}, createDealPolicy, func(ctx context.Context, c *govern.Call, in CreateDealIn) (*mcp.CallToolResult, DealWritten, error) {
				contact := c.Record.Value.(*crm.Contact)
				nd := crm.NewDeal{ContactID: in.ContactID, Title: in.Title, Amount: in.Amount, Currency: in.Currency}
				if in.Stage != "" {
					st, err := crm.ParseStage(in.Stage)
					if err != nil {
						return nil, DealWritten{}, storeError(err)
					}
					nd.Stage = st
				}
				// Written only while the contact is classified as it was
				// when the call was decided (and shown to the approver).
				dl, err := store.CreateDealIf(ctx, nd, contact.Classification)
				if errors.Is(err, crm.ErrChanged) {
					return nil, DealWritten{}, errReclassified("deal's contact")
				}
				if err != nil {
					return nil, DealWritten{}, storeError(err)
				}
				stage := string(dl.Stage)
				out := DealWritten{
					Created: writtenLabel(c, newDealTarget(in.Amount, in.Currency, contact),
						fmt.Sprintf("a deal of %s for contact #%d", money(in.Amount, in.Currency), contact.ID), ScopeContactsRead),
					ID:      dl.ID,
					Changed: DealFields{ContactID: &dl.ContactID, Title: &dl.Title, Amount: &dl.Amount, Currency: &dl.Currency, Stage: &stage},
				}
				return text(out.text()), out, nil
			})
		}},
		{"update_deal_stage", updateDealStagePolicy, func(g *govern.Governor, s *mcp.Server, store *crm.Store) {
			govern.AddTool(g, s, &mcp.Tool{
				Name:        "update_deal_stage",
				Title:       "Move a deal to another stage",
				Description: "Set the stage of a deal. Answers with the stage as stored, not the whole deal.",
				Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)},
				Meta:        scopesMeta(updateDealStagePolicy),
			}, updateDealStagePolicy, func(ctx context.Context, c *govern.Call, in UpdateDealStageIn) (*mcp.CallToolResult, DealWritten, error) {
				rec := c.Record.Value.(*dealRecord)
				st, err := crm.ParseStage(in.Stage)
				if err != nil {
					return nil, DealWritten{}, storeError(err)
				}
				// Written only while the deal's contact is classified as it
				// was when the call was decided (and shown to the approver).
				dl, err := store.UpdateDealStageIf(ctx, in.ID, st, rec.contact.Classification)
				if errors.Is(err, crm.ErrChanged) {
					return nil, DealWritten{}, errReclassified("deal's contact")
				}
				if err != nil {
					return nil, DealWritten{}, storeError(err)
				}
				stage := string(dl.Stage)
				out := DealWritten{Updated: writtenLabel(c, dealTarget(&rec.deal, &rec.contact), fmt.Sprintf("deal #%d", rec.deal.ID), ScopeDealsRead, ScopeContactsRead),
					ID: dl.ID, Changed: DealFields{Stage: &stage}}
				return text(out.text()), out, nil
			})
		}},
	}
}

func describeDeal(d crm.Deal) string {
	return fmt.Sprintf("deal #%d %q with contact #%d: %s %d.%02d, stage %s", d.ID, d.Title, d.ContactID, d.Currency, d.Amount/100, d.Amount%100, d.Stage)
}
