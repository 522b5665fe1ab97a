// Package crm is the demo CRM the MCP server exposes: contacts, the deals
// made with them, and the database that keeps both: an embedded SQLite file
// for one machine ([Open]), or Postgres for several replicas sharing one
// CRM ([OpenPostgres]). Both engines give the same results, validation and
// errors.
//
// The store knows nothing of OAuth scopes or step-up. It marks contacts with
// a [Classification] and leaves one decision to its callers: who may see or
// change a [Restricted] contact. Listings leave restricted contacts (and the
// deals of restricted contacts) out unless the filter asks for them with
// IncludeRestricted, so a caller that forgets the question errs on the side
// of showing less. Lookups by id ([Store.GetContact], [Store.GetDeal]) and the
// update methods do not filter: the caller checks Classification before it
// returns or changes a record, and [Store.CountRestricted] says how many
// restricted contacts a listing withheld. A caller that decided a write from
// a contact's classification writes with [Store.UpdateContactIf],
// [Store.CreateDealIf] or [Store.UpdateDealStageIf], which check it again in
// the writing statement and return [ErrChanged] if it moved. The store offers no way to ask
// whether a search would match a restricted record: a caller deciding from
// that answer (to push, to wait, to refuse) would tell its own caller what
// the restricted records hold.
//
// Typical use:
//
//	store, err := crm.Open(ctx, "data/crm.db")
//	if err != nil {
//		return err
//	}
//	defer store.Close()
//
//	f := crm.ContactFilter{Query: "aegis"}
//	contacts, err := store.ListContacts(ctx, f) // restricted contacts left out
//	withheld, err := store.CountRestricted(ctx, f)
//
// Invalid input comes back as a [*ValidationError] naming the field and what
// to fix; a missing record as an error wrapping [ErrNotFound]. Both are safe
// to show to the user as they stand.
//
// On first start, [Open] and [OpenPostgres] fill an empty database, once
// even when several processes start together, with a dozen fictional
// contacts and a few deals, among them exactly one restricted contact: Riley
// Vance of Aegis Defence Systems, the only contact in the defence sector.
package crm
