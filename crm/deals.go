package crm

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

const dealColumns = `id, contact_id, title, amount, currency, stage, created_at, updated_at`

// ListDeals returns the deals that match f, in id order. Deals whose contact
// is restricted are left out unless f.IncludeRestricted is set; to learn
// whether a given contact is restricted, use [Store.GetContact].
func (s *Store) ListDeals(ctx context.Context, f DealFilter) ([]Deal, error) {
	limit, err := checkLimit(f.Limit)
	if err != nil {
		return nil, err
	}
	var (
		where []string
		args  []any
	)
	if f.Stage != "" {
		st, err := ParseStage(string(f.Stage))
		if err != nil {
			return nil, err
		}
		where, args = append(where, "stage = ?"), append(args, string(st))
	}
	if f.ContactID != 0 {
		if err := checkID("contact_id", f.ContactID); err != nil {
			return nil, err
		}
		where, args = append(where, "contact_id = ?"), append(args, f.ContactID)
	}
	if !f.IncludeRestricted {
		where = append(where, "contact_id NOT IN (SELECT id FROM contacts WHERE "+isRestricted+")")
	}
	q := `SELECT ` + dealColumns + ` FROM deals` + whereClause(where) + ` ORDER BY id LIMIT ` + param
	rows, err := s.q.QueryContext(ctx, q, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("crm: list deals: %w", err)
	}
	defer rows.Close()
	deals := []Deal{} // empty, not nil, so JSON says [] rather than null
	for rows.Next() {
		d, err := scanDeal(rows)
		if err != nil {
			return nil, fmt.Errorf("crm: list deals: %w", err)
		}
		deals = append(deals, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("crm: list deals: %w", err)
	}
	return deals, nil
}

// GetDeal returns the deal with the given id, whatever its contact's
// classification; the caller checks the contact. An unknown id is an error
// wrapping [ErrNotFound].
func (s *Store) GetDeal(ctx context.Context, id int64) (Deal, error) {
	d, err := scanDeal(s.q.QueryRowContext(ctx, `SELECT `+dealColumns+` FROM deals WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Deal{}, notFound("deal", id)
	}
	if err != nil {
		return Deal{}, fmt.Errorf("crm: get deal %d: %w", id, err)
	}
	return d, nil
}

// CreateDeal validates d, stores it and returns the stored deal. A ContactID
// that names no contact is a *ValidationError on contact_id.
func (s *Store) CreateDeal(ctx context.Context, d NewDeal) (Deal, error) {
	d, err := d.validate()
	if err != nil {
		return Deal{}, err
	}
	created, err := s.insertDeal(ctx, s.q, d, s.stamp(), "")
	if errors.Is(err, sql.ErrNoRows) {
		return Deal{}, invalid("contact_id", "no contact has id %d", d.ContactID)
	}
	if err != nil {
		return Deal{}, fmt.Errorf("crm: create deal: %w", err)
	}
	return created, nil
}

// CreateDealIf is CreateDeal, applied only while the deal's contact is
// still classified was, in the same statement: a caller that decided from
// a read of the contact (whether the write needs approval, what the
// approver was shown) writes nothing if the contact was reclassified
// since. Then the error wraps ErrChanged.
func (s *Store) CreateDealIf(ctx context.Context, d NewDeal, was Classification) (Deal, error) {
	if was == "" {
		return Deal{}, errors.New("crm: create deal: no classification to check the contact against")
	}
	d, err := d.validate()
	if err != nil {
		return Deal{}, err
	}
	created, err := s.insertDeal(ctx, s.q, d, s.stamp(), was)
	if errors.Is(err, sql.ErrNoRows) {
		if _, gerr := s.GetContact(ctx, d.ContactID); errors.Is(gerr, ErrNotFound) {
			return Deal{}, invalid("contact_id", "no contact has id %d", d.ContactID)
		} else if gerr != nil {
			return Deal{}, gerr
		}
		return Deal{}, fmt.Errorf("contact %d: %w", d.ContactID, ErrChanged)
	}
	if err != nil {
		return Deal{}, fmt.Errorf("crm: create deal: %w", err)
	}
	return created, nil
}

// insertDeal stores a validated deal, or returns sql.ErrNoRows if its
// contact does not exist, or, unless was is "", is not classified was.
// Checking in the INSERT itself, rather than reading first, leaves no gap
// between the check and the write and spares the caller SQLite's bare
// "FOREIGN KEY constraint failed". The casts tell Postgres the types of
// parameters it cannot infer from a SELECT list.
func (s *Store) insertDeal(ctx context.Context, q querier, d NewDeal, now any, was Classification) (Deal, error) {
	ts := "?"
	if s.pg {
		ts = "CAST(? AS timestamptz)"
	}
	where, args := "id = ?", []any{d.Title, d.Amount, d.Currency, string(d.Stage), now, now, d.ContactID}
	if was != "" {
		where, args = where+" AND classification = ?", append(args, string(was))
	}
	return scanDeal(q.QueryRowContext(ctx, `INSERT INTO deals
		(contact_id, title, amount, currency, stage, created_at, updated_at)
		SELECT id, CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS TEXT), `+ts+`, `+ts+` FROM contacts WHERE `+where+`
		RETURNING `+dealColumns, args...))
}

// UpdateDealStage moves a deal to stage and returns it as stored, with
// UpdatedAt set to now. Any stage may follow any other: the pipeline is
// advice, and deals get reopened. An unknown id is an error wrapping
// [ErrNotFound].
func (s *Store) UpdateDealStage(ctx context.Context, id int64, stage Stage) (Deal, error) {
	st, err := ParseStage(string(stage))
	if err != nil {
		return Deal{}, err
	}
	d, err := scanDeal(s.q.QueryRowContext(ctx,
		`UPDATE deals SET stage = ?, updated_at = ? WHERE id = ? RETURNING `+dealColumns,
		string(st), s.stamp(), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Deal{}, notFound("deal", id)
	}
	if err != nil {
		return Deal{}, fmt.Errorf("crm: update deal %d: %w", id, err)
	}
	return d, nil
}

// UpdateDealStageIf is UpdateDealStage, applied only while the deal's
// contact is still classified was, in the same statement, as CreateDealIf
// is. A reclassified contact is an error wrapping ErrChanged.
func (s *Store) UpdateDealStageIf(ctx context.Context, id int64, stage Stage, was Classification) (Deal, error) {
	st, err := ParseStage(string(stage))
	if err != nil {
		return Deal{}, err
	}
	d, err := scanDeal(s.q.QueryRowContext(ctx,
		`UPDATE deals SET stage = ?, updated_at = ? WHERE id = ?
		AND EXISTS (SELECT 1 FROM contacts WHERE contacts.id = deals.contact_id AND contacts.classification = ?)
		RETURNING `+dealColumns,
		string(st), s.stamp(), id, string(was)))
	if errors.Is(err, sql.ErrNoRows) {
		if _, gerr := s.GetDeal(ctx, id); gerr != nil {
			return Deal{}, gerr
		}
		return Deal{}, fmt.Errorf("deal %d: its contact %w", id, ErrChanged)
	}
	if err != nil {
		return Deal{}, fmt.Errorf("crm: update deal %d: %w", id, err)
	}
	return d, nil
}

func scanDeal(r scanner) (Deal, error) {
	var (
		d                Deal
		stage            string
		created, updated string
	)
	if err := r.Scan(&d.ID, &d.ContactID, &d.Title, &d.Amount, &d.Currency, &stage, &created, &updated); err != nil {
		return Deal{}, err
	}
	d.Stage = Stage(stage)
	var err error
	if d.CreatedAt, err = parseTime(created); err != nil {
		return Deal{}, err
	}
	if d.UpdatedAt, err = parseTime(updated); err != nil {
		return Deal{}, err
	}
	return d, nil
}
