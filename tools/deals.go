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

func dealTools(d *deps) []spec {
	return []spec{
		define(d, toolDef[ListDealsIn, DealList]{tool: &mcp.Tool{
			Name:  "list_deals",
			Title: "List deals",
			Description: "List CRM deals, optionally only one stage or one contact's. Deals of restricted contacts are left out; " +
				"include_restricted: true, or the contact_id of a restricted contact, needs the user's approval (Duo Push) and then returns them.",
			Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: ptr(false)},
		}, scopes: []string{ScopeDealsRead},
			asks:  func(in ListDealsIn) bool { return in.IncludeRestricted },
			named: func(in ListDealsIn) bool { return in.ContactID != 0 },
			names: func(ctx context.Context, in ListDealsIn) (target, error) {
				return d.namedContact(ctx, "contact_id", in.ContactID)
			},
			describe: func(c *call[ListDealsIn]) (string, []stepup.Detail, error) {
				in := c.in
				action := "List deals"
				if c.target.contact != nil {
					action = "List deals of contact " + contactLabel(c.target.contact)
				}
				details := []stepup.Detail{{Key: "restricted", New: "included"}}
				if in.Stage != "" {
					details = append(details, stepup.Detail{Key: "stage", New: in.Stage})
				}
				return action, append(details, paging(in.Limit, 0)...), nil
			},
			run: func(ctx context.Context, c *call[ListDealsIn]) (string, DealList, error) {
				in := c.in
				f := crm.DealFilter{ContactID: in.ContactID, Limit: in.Limit, IncludeRestricted: c.approved}
				if in.Stage != "" {
					st, err := crm.ParseStage(in.Stage)
					if err != nil {
						return "", DealList{}, err
					}
					f.Stage = st
				}
				deals, err := d.store.ListDeals(ctx, f)
				if err != nil {
					return "", DealList{}, err
				}
				out := DealList{Deals: deals}
				if !c.approved {
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
				return b.String(), out, nil
			}}),

		define(d, toolDef[CreateDealIn, DealWritten]{tool: &mcp.Tool{
			Name:        "create_deal",
			Title:       "Create a deal",
			Description: "Create a deal with a contact. Answers with the new deal's id and the fields as stored.",
			Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
		}, scopes: []string{ScopeDealsWrite}, writes: true,
			check: func(in CreateDealIn) (CreateDealIn, error) {
				nd, err := crm.NewDeal{ContactID: in.ContactID, Title: in.Title, Amount: in.Amount, Currency: in.Currency, Stage: crm.Stage(in.Stage)}.Validate()
				if err != nil {
					return in, err
				}
				stage := string(nd.Stage)
				if in.Stage == "" {
					stage = ""
				}
				return CreateDealIn{ContactID: nd.ContactID, Title: nd.Title, Amount: nd.Amount, Currency: nd.Currency, Stage: stage}, nil
			},
			names: func(ctx context.Context, in CreateDealIn) (target, error) {
				return d.namedContact(ctx, "contact_id", in.ContactID)
			},
			describe: func(c *call[CreateDealIn]) (string, []stepup.Detail, error) {
				in := c.in
				stage := in.Stage
				if stage == "" {
					stage = string(crm.StageLead) + " (default)"
				}
				return "Create " + newDealTarget(in.Amount, in.Currency, c.target.contact), []stepup.Detail{
					{Key: "title", New: in.Title},
					{Key: "amount", New: strconv.FormatInt(in.Amount, 10) + " (minor units)"},
					{Key: "currency", New: in.Currency},
					{Key: "stage", New: stage},
				}, nil
			},
			run: func(ctx context.Context, c *call[CreateDealIn]) (string, DealWritten, error) {
				in := c.in
				nd := crm.NewDeal{ContactID: in.ContactID, Title: in.Title, Amount: in.Amount, Currency: in.Currency}
				if in.Stage != "" {
					st, err := crm.ParseStage(in.Stage)
					if err != nil {
						return "", DealWritten{}, err
					}
					nd.Stage = st
				}
				// Written only while the contact is classified as it was
				// when the call was decided (and shown to the approver).
				dl, err := d.store.CreateDealIf(ctx, nd, c.target.contact.Classification)
				if errors.Is(err, crm.ErrChanged) {
					return "", DealWritten{}, errReclassified("deal's contact")
				}
				if err != nil {
					return "", DealWritten{}, err
				}
				stage := string(dl.Stage)
				out := DealWritten{
					Created: newDealTarget(in.Amount, in.Currency, c.target.contact),
					ID:      dl.ID,
					Changed: DealFields{ContactID: &dl.ContactID, Title: &dl.Title, Amount: &dl.Amount, Currency: &dl.Currency, Stage: &stage},
				}
				return out.text(), out, nil
			}}),

		define(d, toolDef[UpdateDealStageIn, DealWritten]{tool: &mcp.Tool{
			Name:        "update_deal_stage",
			Title:       "Move a deal to another stage",
			Description: "Set the stage of a deal. Answers with the stage as stored, not the whole deal.",
			Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)},
		}, scopes: []string{ScopeDealsWrite}, writes: true,
			check: func(in UpdateDealStageIn) (UpdateDealStageIn, error) {
				st, err := crm.ParseStage(in.Stage)
				in.Stage = string(st)
				return in, err
			},
			names: func(ctx context.Context, in UpdateDealStageIn) (target, error) {
				if in.ID <= 0 {
					return target{}, &toolError{"id must be a positive deal id (see list_deals)"}
				}
				dl, err := d.store.GetDeal(ctx, in.ID)
				if err != nil {
					return target{}, err
				}
				c, err := d.store.GetContact(ctx, dl.ContactID)
				if err != nil {
					return target{}, err
				}
				return target{restricted: c.Classification == crm.Restricted, contact: &c, deal: &dl}, nil
			},
			describe: func(c *call[UpdateDealStageIn]) (string, []stepup.Detail, error) {
				dl := c.target.deal
				return "Move " + dealTarget(dl, c.target.contact),
					[]stepup.Detail{{Key: "stage", Old: string(dl.Stage), HasOld: true, New: c.in.Stage}}, nil
			},
			run: func(ctx context.Context, c *call[UpdateDealStageIn]) (string, DealWritten, error) {
				st, err := crm.ParseStage(c.in.Stage)
				if err != nil {
					return "", DealWritten{}, err
				}
				// Written only while the deal's contact is classified as it
				// was when the call was decided (and shown to the approver).
				dl, err := d.store.UpdateDealStageIf(ctx, c.in.ID, st, c.target.contact.Classification)
				if errors.Is(err, crm.ErrChanged) {
					return "", DealWritten{}, errReclassified("deal's contact")
				}
				if err != nil {
					return "", DealWritten{}, err
				}
				stage := string(dl.Stage)
				out := DealWritten{Updated: dealTarget(c.target.deal, c.target.contact), ID: dl.ID, Changed: DealFields{Stage: &stage}}
				return out.text(), out, nil
			}}),
	}
}

func describeDeal(d crm.Deal) string {
	return fmt.Sprintf("deal #%d %q with contact #%d: %s %d.%02d, stage %s", d.ID, d.Title, d.ContactID, d.Currency, d.Amount/100, d.Amount%100, d.Stage)
}
