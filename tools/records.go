package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/govern"
)

// records is the CRM's govern.Records: it reads the one record a call
// names by id, once, before anything is decided. That is the one place
// where stored data may decide that a call needs approval: the
// classification of a named record is therefore visible to the caller;
// its content is not.
//
// A contact is restricted by its own classification; a deal by its
// contact's. Fields are what a push may show as old values and in its
// action sentence, raw: govern escapes and cuts them.
type records struct{ store *crm.Store }

// Record kinds, as policies name them.
const (
	kindContact = "contact"
	kindDeal    = "deal"
)

// dealRecord is a deal and its contact, as read before the decision.
type dealRecord struct {
	deal    crm.Deal
	contact crm.Contact
}

func (r records) Lookup(ctx context.Context, kind string, raw any) (*govern.Record, error) {
	id, ok := positive(raw)
	if !ok {
		return nil, toolError(fmt.Sprintf("a %s id must be a positive whole number (see list_%ss)", kind, kind))
	}
	switch kind {
	case kindContact:
		c, err := r.store.GetContact(ctx, id)
		if errors.Is(err, crm.ErrNotFound) {
			return nil, toolError(fmt.Sprintf("contact %d not found; check the id (list_contacts shows valid ids)", id))
		}
		if err != nil {
			return nil, err
		}
		return &govern.Record{Label: contactLabel(&c), Restricted: c.Classification == crm.Restricted, Fields: contactFields(&c, ""), Value: &c}, nil
	case kindDeal:
		d, err := r.store.GetDeal(ctx, id)
		if errors.Is(err, crm.ErrNotFound) {
			return nil, toolError(fmt.Sprintf("deal %d not found; check the id (list_deals shows valid ids)", id))
		}
		if err != nil {
			return nil, err
		}
		c, err := r.store.GetContact(ctx, d.ContactID)
		if err != nil {
			return nil, err
		}
		f := contactFields(&c, "contact_")
		f["id"], f["title"], f["stage"] = strconv.FormatInt(d.ID, 10), d.Title, string(d.Stage)
		// Formatted here: a template sees every stored value cut to its
		// budget, which money could not read.
		f["value"] = money(d.Amount, d.Currency)
		return &govern.Record{Label: dealTarget(&d, &c), Restricted: c.Classification == crm.Restricted, Fields: f, Value: &dealRecord{d, c}}, nil
	}
	return nil, fmt.Errorf("tools: no record kind %q", kind)
}

// contactFields are a contact's fields by name, each prefixed.
func contactFields(c *crm.Contact, prefix string) map[string]string {
	return map[string]string{
		prefix + "id": strconv.FormatInt(c.ID, 10), prefix + "name": c.Name, prefix + "email": c.Email, prefix + "phone": c.Phone,
		prefix + "company": c.Company, prefix + "sector": c.Sector, prefix + "classification": string(c.Classification), prefix + "owner": c.Owner,
	}
}

// positive reads a decoded id argument.
func positive(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(string(n), 10, 64)
	return id, err == nil && id > 0
}
