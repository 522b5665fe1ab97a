package tools

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/crm"
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
}

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
			Description: "List CRM deals, optionally only one stage or one contact's. Deals of restricted contacts are withheld from a plain listing; " +
				"include_restricted: true, or the contact_id of a restricted contact, needs the user's approval (Duo Push) and then returns them.",
			Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: ptr(false)},
		}, scopes: []string{ScopeDealsRead},
			restricted: func(ctx context.Context, in ListDealsIn) (bool, error) {
				if in.IncludeRestricted {
					n, err := d.store.CountRestricted(ctx, crm.ContactFilter{})
					return n > 0, err
				}
				return d.contactRestricted(ctx, in.ContactID)
			},
			probes: func(in ListDealsIn) bool { return in.ContactID != 0 || in.IncludeRestricted },
			run: func(ctx context.Context, in ListDealsIn) (string, DealList, error) {
				// Naming a contact asks for its deals, restricted or not (and
				// approved above if it is).
				f := crm.DealFilter{ContactID: in.ContactID, Limit: in.Limit, IncludeRestricted: in.IncludeRestricted || in.ContactID != 0}
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
				var b strings.Builder
				fmt.Fprintf(&b, "%d deal(s):\n", len(deals))
				for _, dl := range deals {
					fmt.Fprintf(&b, "- %s\n", describeDeal(dl))
				}
				return b.String(), DealList{Deals: deals}, nil
			}}),

		define(d, toolDef[CreateDealIn, crm.Deal]{tool: &mcp.Tool{
			Name:        "create_deal",
			Title:       "Create a deal",
			Description: "Create a deal with a contact.",
			Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
		}, scopes: []string{ScopeDealsWrite}, writes: true,
			restricted: func(ctx context.Context, in CreateDealIn) (bool, error) {
				return d.contactRestricted(ctx, in.ContactID)
			},
			run: func(ctx context.Context, in CreateDealIn) (string, crm.Deal, error) {
				nd := crm.NewDeal{ContactID: in.ContactID, Title: in.Title, Amount: in.Amount, Currency: in.Currency}
				if in.Stage != "" {
					st, err := crm.ParseStage(in.Stage)
					if err != nil {
						return "", crm.Deal{}, err
					}
					nd.Stage = st
				}
				dl, err := d.store.CreateDeal(ctx, nd)
				if err != nil {
					return "", crm.Deal{}, err
				}
				return "Created " + describeDeal(dl), dl, nil
			}}),

		define(d, toolDef[UpdateDealStageIn, crm.Deal]{tool: &mcp.Tool{
			Name:        "update_deal_stage",
			Title:       "Move a deal to another stage",
			Description: "Set the stage of a deal.",
			Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)},
		}, scopes: []string{ScopeDealsWrite}, writes: true,
			restricted: func(ctx context.Context, in UpdateDealStageIn) (bool, error) {
				if in.ID <= 0 {
					return false, nil
				}
				dl, err := d.store.GetDeal(ctx, in.ID)
				if errors.Is(err, crm.ErrNotFound) {
					return false, nil
				}
				if err != nil {
					return false, err
				}
				return d.contactRestricted(ctx, dl.ContactID)
			},
			probes: func(UpdateDealStageIn) bool { return true },
			run: func(ctx context.Context, in UpdateDealStageIn) (string, crm.Deal, error) {
				if in.ID <= 0 {
					return "", crm.Deal{}, &toolError{"id must be a positive deal id (see list_deals)"}
				}
				st, err := crm.ParseStage(in.Stage)
				if err != nil {
					return "", crm.Deal{}, err
				}
				dl, err := d.store.UpdateDealStage(ctx, in.ID, st)
				if err != nil {
					return "", crm.Deal{}, err
				}
				return "Updated " + describeDeal(dl), dl, nil
			}}),
	}
}

func describeDeal(d crm.Deal) string {
	return fmt.Sprintf("deal #%d %q with contact #%d: %s %d.%02d, stage %s", d.ID, d.Title, d.ContactID, d.Currency, d.Amount/100, d.Amount%100, d.Stage)
}
