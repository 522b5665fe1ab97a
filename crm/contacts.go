package crm

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
)

const contactColumns = `id, name, email, phone, company, sector, classification, owner, created_at, updated_at`

// isRestricted and notRestricted test a contact's classification against
// a literal rather than a bound parameter: SQLite (built with STAT4)
// plans a comparison of an indexed column with a parameter for the value
// bound, so it would prepare the statement again on every call. The value
// is the store's own constant, never input.
const (
	isRestricted  = "classification = '" + string(Restricted) + "'"
	notRestricted = "classification <> '" + string(Restricted) + "'"
)

// param is a placeholder for a LIMIT or OFFSET. SQLite plans for the
// integer bound to a bare ? there, and so prepares the statement again
// whenever a new one is bound, on every call; as an expression it is
// planned once. Postgres reads it alike.
const param = "(? + 0)"

// ListContacts returns the contacts that match f, in id order. Restricted
// contacts are left out unless f.IncludeRestricted is set; ask
// [Store.CountRestricted] how many were, or list with
// [Store.ListContactsWithheld], which counts them in the same query.
func (s *Store) ListContacts(ctx context.Context, f ContactFilter) ([]Contact, error) {
	contacts, _, err := s.listContacts(ctx, f, false)
	return contacts, err
}

// ListContactsWithheld lists the contacts that match f without the
// restricted ones, as ListContacts does, and counts the restricted
// contacts that match f.Query, as CountRestricted does: what the listing
// withheld. Both come from one statement, so they describe the same moment.
// f.IncludeRestricted must be false: a listing that includes them withholds
// nothing.
func (s *Store) ListContactsWithheld(ctx context.Context, f ContactFilter) ([]Contact, int, error) {
	if f.IncludeRestricted {
		return nil, 0, errors.New("crm: list contacts withheld: IncludeRestricted is set, so nothing is withheld")
	}
	return s.listContacts(ctx, f, true)
}

// listContacts runs the listing, with a column counting the restricted
// matches when withheld is set. A page with no rows carries no count, so
// only then is it asked for on its own.
func (s *Store) listContacts(ctx context.Context, f ContactFilter, withheld bool) ([]Contact, int, error) {
	limit, err := checkLimit(f.Limit)
	if err != nil {
		return nil, 0, err
	}
	if err := checkOffset(f.Offset); err != nil {
		return nil, 0, err
	}
	match, args, err := s.contactWhere(f.Query)
	if err != nil {
		return nil, 0, err
	}
	where, cols := match, contactColumns
	var countArgs []any
	if withheld {
		cols += `, (SELECT count(*) FROM contacts` + whereClause(append(slices.Clip(match), isRestricted)) + `)`
		countArgs = args
	}
	if !f.IncludeRestricted {
		where = append(slices.Clip(where), notRestricted)
	}
	q := `SELECT ` + cols + ` FROM contacts` + whereClause(where) + ` ORDER BY id LIMIT ` + param + ` OFFSET ` + param
	rows, err := s.q.QueryContext(ctx, q, slices.Concat(countArgs, args, []any{limit, f.Offset})...)
	if err != nil {
		return nil, 0, fmt.Errorf("crm: list contacts: %w", err)
	}
	defer rows.Close()
	contacts := []Contact{} // empty, not nil, so JSON says [] rather than null
	n := -1
	for rows.Next() {
		var c Contact
		if withheld {
			c, err = scanContact(rows, &n)
		} else {
			c, err = scanContact(rows)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("crm: list contacts: %w", err)
		}
		contacts = append(contacts, c)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("crm: list contacts: %w", err)
	}
	if withheld && n < 0 {
		if n, err = s.CountRestricted(ctx, f); err != nil {
			return nil, 0, err
		}
	}
	return contacts, max(n, 0), nil
}

// CountRestricted returns how many restricted contacts match f.Query,
// ignoring Limit, Offset and IncludeRestricted: for a listing without
// IncludeRestricted, the number it withheld ("2 restricted records
// withheld").
func (s *Store) CountRestricted(ctx context.Context, f ContactFilter) (int, error) {
	where, args, err := s.contactWhere(f.Query)
	if err != nil {
		return 0, err
	}
	where = append(where, isRestricted)
	var n int
	if err := s.q.QueryRowContext(ctx, `SELECT count(*) FROM contacts`+whereClause(where), args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("crm: count restricted contacts: %w", err)
	}
	return n, nil
}

// contactWhere returns the condition for a contact query, if any. SQLite's
// LIKE ignores the case of ASCII letters; Postgres's ILIKE that of every
// letter.
func (s *Store) contactWhere(query string) ([]string, []any, error) {
	query, err := checkQuery(query)
	if err != nil || query == "" {
		return nil, nil, err
	}
	like := "LIKE"
	if s.pg {
		like = "ILIKE"
	}
	p := "%" + escapeLike(query) + "%"
	cond := fmt.Sprintf(`(name %[1]s ? ESCAPE '\' OR email %[1]s ? ESCAPE '\' OR company %[1]s ? ESCAPE '\' OR sector %[1]s ? ESCAPE '\')`, like)
	return []string{cond}, []any{p, p, p, p}, nil
}

// escapeLike makes s match itself in a LIKE pattern with ESCAPE '\'.
var escapeLike = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace

func whereClause(conds []string) string {
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// GetContact returns the contact with the given id, restricted or not; the
// caller checks Classification. An unknown id is an error wrapping
// [ErrNotFound].
func (s *Store) GetContact(ctx context.Context, id int64) (Contact, error) {
	row := s.q.QueryRowContext(ctx, `SELECT `+contactColumns+` FROM contacts WHERE id = ?`, id)
	c, err := scanContact(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Contact{}, notFound("contact", id)
	}
	if err != nil {
		return Contact{}, fmt.Errorf("crm: get contact %d: %w", id, err)
	}
	return c, nil
}

// CreateContact validates c, stores it and returns the stored contact.
func (s *Store) CreateContact(ctx context.Context, c NewContact) (Contact, error) {
	c, err := c.validate()
	if err != nil {
		return Contact{}, err
	}
	created, err := s.insertContact(ctx, s.q, c, s.stamp())
	if err != nil {
		return Contact{}, fmt.Errorf("crm: create contact: %w", err)
	}
	return created, nil
}

// insertContact stores a validated contact.
func (s *Store) insertContact(ctx context.Context, q querier, c NewContact, now any) (Contact, error) {
	return scanContact(q.QueryRowContext(ctx, `INSERT INTO contacts
		(name, email, phone, company, sector, classification, owner, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		RETURNING `+contactColumns,
		c.Name, c.Email, c.Phone, c.Company, c.Sector, string(c.Classification), c.Owner, now, now))
}

// updateContactSQL changes the columns whose argument is not NULL in one
// statement, so an update cannot interleave with another.
const updateContactSQL = `UPDATE contacts SET
	name           = coalesce(?, name),
	email          = coalesce(?, email),
	phone          = coalesce(?, phone),
	company        = coalesce(?, company),
	sector         = coalesce(?, sector),
	classification = coalesce(?, classification),
	owner          = coalesce(?, owner),
	updated_at     = ?
	WHERE id = ?
	RETURNING ` + contactColumns

// UpdateContact changes the non-nil fields of u and returns the contact as
// stored, with UpdatedAt set to now. An update with no fields is an error
// wrapping [ErrNothingToChange], returned before anything is read: a write
// must not double as a read. An unknown id is an error wrapping
// [ErrNotFound].
func (s *Store) UpdateContact(ctx context.Context, id int64, u ContactUpdate) (Contact, error) {
	if u.empty() {
		return Contact{}, nothingToChange(id)
	}
	args, err := u.args()
	if err != nil {
		return Contact{}, err
	}
	row := s.q.QueryRowContext(ctx, updateContactSQL, append(args, s.stamp(), id)...)
	c, err := scanContact(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Contact{}, notFound("contact", id)
	}
	if err != nil {
		return Contact{}, fmt.Errorf("crm: update contact %d: %w", id, err)
	}
	return c, nil
}

// updateContactIfSQL is updateContactSQL that applies only while the
// contact's classification is still the one given.
var updateContactIfSQL = strings.Replace(updateContactSQL, "WHERE id = ?", "WHERE id = ? AND classification = ?", 1)

// ErrChanged is wrapped by the error of UpdateContactIf, CreateDealIf and
// UpdateDealStageIf when the contact's classification is no longer the one
// the caller read.
var ErrChanged = errors.New("changed since it was read")

// ErrNothingToChange is wrapped by the error of an update that sets no
// field.
var ErrNothingToChange = errors.New("nothing to change")

func nothingToChange(id int64) error {
	return fmt.Errorf("contact %d: %w", id, ErrNothingToChange)
}

// UpdateContactIf is UpdateContact, applied only while the contact is still
// classified was, in the same statement: a caller that decided from a read
// (whether the write needs approval, what the approver was shown) writes
// nothing if the record was reclassified since. Then the error wraps
// ErrChanged.
func (s *Store) UpdateContactIf(ctx context.Context, id int64, u ContactUpdate, was Classification) (Contact, error) {
	if u.empty() {
		return Contact{}, nothingToChange(id)
	}
	args, err := u.args()
	if err != nil {
		return Contact{}, err
	}
	row := s.q.QueryRowContext(ctx, updateContactIfSQL, append(args, s.stamp(), id, string(was))...)
	c, err := scanContact(row)
	if errors.Is(err, sql.ErrNoRows) {
		if _, gerr := s.GetContact(ctx, id); gerr != nil {
			return Contact{}, gerr
		}
		return Contact{}, fmt.Errorf("contact %d: %w", id, ErrChanged)
	}
	if err != nil {
		return Contact{}, fmt.Errorf("crm: update contact %d: %w", id, err)
	}
	return c, nil
}

// scanner is what *sql.Row and *sql.Rows share.
type scanner interface {
	Scan(dest ...any) error
}

// scanContact reads the contactColumns, then into extra any columns
// after them.
func scanContact(r scanner, extra ...any) (Contact, error) {
	var (
		c                Contact
		class            string
		created, updated string
	)
	if err := r.Scan(append([]any{&c.ID, &c.Name, &c.Email, &c.Phone, &c.Company, &c.Sector, &class, &c.Owner, &created, &updated}, extra...)...); err != nil {
		return Contact{}, err
	}
	c.Classification = Classification(class)
	var err error
	if c.CreatedAt, err = parseTime(created); err != nil {
		return Contact{}, err
	}
	if c.UpdatedAt, err = parseTime(updated); err != nil {
		return Contact{}, err
	}
	return c, nil
}
