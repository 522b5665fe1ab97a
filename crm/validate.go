package crm

import (
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Length limits, in characters. They keep one record from swamping a tool
// result; none is a limit SQLite needs.
const (
	maxNameLen   = 200
	maxEmailLen  = 254 // the longest address SMTP can carry (RFC 5321 §4.5.3.1.3)
	maxPhoneLen  = 40
	maxTextLen   = 200 // company, owner, deal title
	maxSectorLen = 50
	maxQueryLen  = 200
)

// required trims s and checks that something is left and not too much.
func required(field, s string, max int) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", invalid(field, "must not be empty")
	}
	return optional(field, s, max)
}

// optional trims s and checks its length; empty is fine. Text that is not
// UTF-8, or holds a NUL, is refused here rather than by the database:
// Postgres cannot store either, and SQLite would store what no other
// engine could return.
func optional(field, s string, max int) (string, error) {
	s = strings.TrimSpace(s)
	if !utf8.ValidString(s) {
		return "", invalid(field, "is not valid UTF-8 text")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "", invalid(field, "must not contain NUL characters")
	}
	if n := utf8.RuneCountInString(s); n > max {
		return "", invalid(field, "is %d characters long; at most %d are allowed", n, max)
	}
	return s, nil
}

// checkEmail accepts only a bare address ("ana@example.com"). net/mail would
// also take `Ana <ana@example.com>` and comments; storing those would make
// the column mean two things, so the parsed address must equal the input.
func checkEmail(s string) (string, error) {
	s, err := required("email", s, maxEmailLen)
	if err != nil {
		return "", err
	}
	for _, r := range s {
		if r > unicode.MaxASCII {
			// A non-ASCII address can imitate another one letter for letter
			// (a Cyrillic о for an o), which no approver could spot.
			return "", invalid("email", "%q has characters outside ASCII; give the address in ASCII (internationalized addresses are not supported)", s)
		}
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", invalid("email", "%q is not a valid email address; give the bare address, like name@example.com", s)
	}
	return s, nil
}

// checkPhone allows what phone numbers are written with: digits, spaces
// and + - ( ) . / x. Anything else in a phone number can only mislead
// (letters that read as digits, right-to-left text that reorders them).
func checkPhone(s string) (string, error) {
	s, err := optional("phone", s, maxPhoneLen)
	if err != nil {
		return "", err
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9') && !strings.ContainsRune(" +-()./x", r) {
			return "", invalid("phone", "%q may hold only digits, spaces and + - ( ) . / x", s)
		}
	}
	return s, nil
}

func checkSector(s string) (string, error) {
	s, err := optional("sector", s, maxSectorLen)
	return strings.ToLower(s), err
}

// checkCurrency is strict on purpose: a lower-case or unknown-looking code is
// more likely a mistake (a symbol, a country) than something to fix up.
func checkCurrency(s string) (string, error) {
	if s == "" {
		return "", invalid("currency", "must not be empty; use a three-letter ISO 4217 code such as USD or EUR")
	}
	ok := len(s) == 3
	for i := 0; ok && i < len(s); i++ {
		ok = 'A' <= s[i] && s[i] <= 'Z'
	}
	if !ok {
		return "", invalid("currency", "%q is not a currency code; use three upper-case ISO 4217 letters such as USD or EUR", s)
	}
	return s, nil
}

func checkAmount(a int64) error {
	if a < 0 {
		return invalid("amount", "%d is negative; give zero or more, in minor units (cents for USD)", a)
	}
	return nil
}

// checkLimit maps 0 to DefaultLimit and rejects the rest of what is out of
// range, rather than clamping, so that a caller asking for 1000 learns that
// it got at most MaxLimit.
func checkLimit(limit int) (int, error) {
	if limit == 0 {
		return DefaultLimit, nil
	}
	if limit < 1 || limit > MaxLimit {
		return 0, invalid("limit", "%d is out of range; use 1 to %d, or 0 for the default of %d", limit, MaxLimit, DefaultLimit)
	}
	return limit, nil
}

func checkOffset(offset int) error {
	if offset < 0 {
		return invalid("offset", "%d is negative; use 0 or more", offset)
	}
	return nil
}

// checkQuery trims q. Control characters are refused because no stored field
// holds one, so they can only be a mistake.
func checkQuery(q string) (string, error) {
	if strings.IndexFunc(strings.TrimSpace(q), unicode.IsControl) >= 0 {
		return "", invalid("query", "must not contain control characters such as newlines or tabs")
	}
	return optional("query", q, maxQueryLen)
}

// checkID rejects ids that cannot exist, so a caller passing 0 by mistake
// is told so instead of getting "not found".
func checkID(field string, id int64) error {
	if id <= 0 {
		return invalid(field, "%d is not a valid id; ids are positive", id)
	}
	return nil
}

func (c NewContact) validate() (NewContact, error) {
	var err error
	if c.Name, err = required("name", c.Name, maxNameLen); err != nil {
		return c, err
	}
	if c.Email, err = checkEmail(c.Email); err != nil {
		return c, err
	}
	if c.Phone, err = checkPhone(c.Phone); err != nil {
		return c, err
	}
	if c.Company, err = optional("company", c.Company, maxTextLen); err != nil {
		return c, err
	}
	if c.Sector, err = checkSector(c.Sector); err != nil {
		return c, err
	}
	if c.Classification == "" {
		c.Classification = Internal
	} else if c.Classification, err = ParseClassification(string(c.Classification)); err != nil {
		return c, err
	}
	if c.Owner, err = optional("owner", c.Owner, maxTextLen); err != nil {
		return c, err
	}
	return c, nil
}

// args checks the non-nil fields of u and returns them cleaned, in the
// column order of updateContactSQL, with nil for "leave as it is".
func (u ContactUpdate) args() ([]any, error) {
	var class *string
	if u.Classification != nil {
		s := string(*u.Classification)
		class = &s
	}
	fields := []struct {
		in    *string
		check func(string) (string, error)
	}{
		{u.Name, func(s string) (string, error) { return required("name", s, maxNameLen) }},
		{u.Email, checkEmail},
		{u.Phone, checkPhone},
		{u.Company, func(s string) (string, error) { return optional("company", s, maxTextLen) }},
		{u.Sector, checkSector},
		{class, func(s string) (string, error) {
			c, err := ParseClassification(s)
			return string(c), err
		}},
		{u.Owner, func(s string) (string, error) { return optional("owner", s, maxTextLen) }},
	}
	args := make([]any, len(fields))
	for i, f := range fields {
		if f.in == nil {
			continue
		}
		v, err := f.check(*f.in)
		if err != nil {
			return nil, err
		}
		args[i] = v
	}
	return args, nil
}

func (d NewDeal) validate() (NewDeal, error) {
	var err error
	if err = checkID("contact_id", d.ContactID); err != nil {
		return d, err
	}
	if d.Title, err = required("title", d.Title, maxTextLen); err != nil {
		return d, err
	}
	if err = checkAmount(d.Amount); err != nil {
		return d, err
	}
	if d.Currency, err = checkCurrency(d.Currency); err != nil {
		return d, err
	}
	if d.Stage == "" {
		d.Stage = StageLead
	} else if d.Stage, err = ParseStage(string(d.Stage)); err != nil {
		return d, err
	}
	return d, nil
}

// Validate checks c as CreateContact does and returns it as it would be
// stored (trimmed, sector in lower case, classification defaulted), so a
// caller can show exactly what will be written before it asks for
// approval.
func (c NewContact) Validate() (NewContact, error) { return c.validate() }

// Validate checks the fields u sets as UpdateContact does and returns them
// as they would be stored.
func (u ContactUpdate) Validate() (ContactUpdate, error) {
	args, err := u.args()
	if err != nil {
		return u, err
	}
	at := func(i int) *string {
		if s, ok := args[i].(string); ok {
			return &s
		}
		return nil
	}
	out := ContactUpdate{Name: at(0), Email: at(1), Phone: at(2), Company: at(3), Sector: at(4), Owner: at(6)}
	if s := at(5); s != nil {
		cl := Classification(*s)
		out.Classification = &cl
	}
	return out, nil
}

// Validate checks d as CreateDeal does and returns it as it would be
// stored.
func (d NewDeal) Validate() (NewDeal, error) { return d.validate() }
