package crm

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests check the field each refusal blames and the message it gives,
// which tools pass on to the user as it stands. A want ending in "..." is a
// prefix.

func assertInvalid(t *testing.T, err error, field, want string) {
	t.Helper()
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, field, ve.Field)
	if prefix, ok := strings.CutSuffix(want, "..."); ok {
		assert.True(t, strings.HasPrefix(err.Error(), prefix), "got %q, want prefix %q", err.Error(), prefix)
	} else {
		assert.Equal(t, want, err.Error())
	}
	assert.NotErrorIs(t, err, ErrNotFound)
}

// assertUnchanged checks that refused writes stored nothing.
func assertUnchanged(t *testing.T, s *Store) {
	t.Helper()
	cs := allContacts(t, s)
	require.Len(t, cs, len(seedContacts))
	for i, c := range cs {
		assert.Equal(t, seedContacts[i].Name, c.Name)
		assert.Equal(t, seedContacts[i].Email, c.Email)
		assert.Equal(t, seedContacts[i].Classification, c.Classification)
	}
	ds := allDeals(t, s)
	require.Len(t, ds, len(seedDeals))
	for i, d := range ds {
		assert.Equal(t, seedDeals[i].deal.Stage, d.Stage)
	}
}

func TestCreateContactInvalid(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		tests := []struct {
			name   string
			change func(*NewContact)
			field  string
			want   string
		}{
			{"empty name", func(c *NewContact) { c.Name = "" }, "name", "name: must not be empty"},
			{"whitespace name", func(c *NewContact) { c.Name = " \t\n " }, "name", "name: must not be empty"},
			{"long name", func(c *NewContact) { c.Name = strings.Repeat("é", 201) }, "name", "name: is 201 characters long; at most 200 are allowed"},
			{"empty email", func(c *NewContact) { c.Email = " " }, "email", "email: must not be empty"},
			{"malformed email", func(c *NewContact) { c.Email = "x@" }, "email", `email: "x@" is not a valid email address; give the bare address, like name@example.com`},
			{"email without at", func(c *NewContact) { c.Email = "example.com" }, "email", `email: "example.com" is not a valid email address...`},
			{"email with two ats", func(c *NewContact) { c.Email = "a@b@example.com" }, "email", `email: "a@b@example.com" is not a valid email address...`},
			{"email with display name", func(c *NewContact) { c.Email = "Ann <ann@example.com>" }, "email", `email: "Ann <ann@example.com>" is not a valid email address...`},
			{"email in angle brackets", func(c *NewContact) { c.Email = "<ann@example.com>" }, "email", `email: "<ann@example.com>" is not a valid email address...`},
			{"email with comment", func(c *NewContact) { c.Email = "ann@example.com (Ann)" }, "email", `email: "ann@example.com (Ann)" is not a valid email address...`},
			{"long email", func(c *NewContact) { c.Email = strings.Repeat("a", 250) + "@example.com" }, "email", "email: is 262 characters long; at most 254 are allowed"},
			{"unknown classification", func(c *NewContact) { c.Classification = "secret" }, "classification", `classification: "secret" is not a classification; use one of public, internal, restricted`},
			{"long phone", func(c *NewContact) { c.Phone = strings.Repeat("5", 41) }, "phone", "phone: is 41 characters long; at most 40 are allowed"},
			{"long company", func(c *NewContact) { c.Company = strings.Repeat("c", 201) }, "company", "company: is 201 characters long; at most 200 are allowed"},
			{"long sector", func(c *NewContact) { c.Sector = strings.Repeat("s", 51) }, "sector", "sector: is 51 characters long; at most 50 are allowed"},
			{"long owner", func(c *NewContact) { c.Owner = strings.Repeat("o", 201) }, "owner", "owner: is 201 characters long; at most 200 are allowed"},
			// Postgres cannot store these; SQLite must refuse them alike.
			{"NUL in name", func(c *NewContact) { c.Name = "Ann\x00Lee" }, "name", "name: must not contain NUL characters"},
			{"invalid UTF-8 in company", func(c *NewContact) { c.Company = "Caf\xe9" }, "company", "company: is not valid UTF-8 text"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := NewContact{Name: "Valid Name", Email: "valid@example.com"}
				tt.change(&c)
				_, err := s.CreateContact(t.Context(), c)
				assertInvalid(t, err, tt.field, tt.want)
			})
		}
		assertUnchanged(t, s)
	})
}

func TestUpdateContactInvalid(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		str := func(s string) *string { return &s }
		class := func(c Classification) *Classification { return &c }
		tests := []struct {
			name  string
			id    int64
			u     ContactUpdate
			field string
			want  string
		}{
			{"empty name", 1, ContactUpdate{Name: str(" ")}, "name", "name: must not be empty"},
			{"empty email", 1, ContactUpdate{Email: str("")}, "email", "email: must not be empty"},
			{"malformed email", 1, ContactUpdate{Email: str("a@b@c")}, "email", `email: "a@b@c" is not a valid email address...`},
			{"empty classification", 1, ContactUpdate{Classification: class("")}, "classification", `classification: "" is not a classification; use one of public, internal, restricted`},
			{"unknown classification", 1, ContactUpdate{Classification: class("top-secret")}, "classification", `classification: "top-secret" is not a classification...`},
			{"long sector", 1, ContactUpdate{Sector: str(strings.Repeat("s", 51))}, "sector", "sector: is 51 characters long..."},
			{"one bad field among good ones", 1, ContactUpdate{Name: str("Fine"), Phone: str("1"), Owner: str(strings.Repeat("o", 201))}, "owner", "owner: is 201 characters long..."},
			// Input is checked before the lookup, so bad input is reported
			// even for an unknown id.
			{"unknown id with bad input", 9999, ContactUpdate{Email: str("nope")}, "email", `email: "nope" is not a valid email address...`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := s.UpdateContact(t.Context(), tt.id, tt.u)
				assertInvalid(t, err, tt.field, tt.want)
			})
		}
		assertUnchanged(t, s)
	})
}

func TestContactFilterInvalid(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		tests := []struct {
			name      string
			f         ContactFilter
			queryOnly bool // also refused by CountRestricted
			field     string
			want      string
		}{
			{"negative limit", ContactFilter{Limit: -1}, false, "limit", "limit: -1 is out of range; use 1 to 200, or 0 for the default of 50"},
			{"limit too large", ContactFilter{Limit: 201}, false, "limit", "limit: 201 is out of range; use 1 to 200, or 0 for the default of 50"},
			{"negative offset", ContactFilter{Offset: -5}, false, "offset", "offset: -5 is negative; use 0 or more"},
			{"long query", ContactFilter{Query: strings.Repeat("q", 201)}, true, "query", "query: is 201 characters long; at most 200 are allowed"},
			{"newline in query", ContactFilter{Query: "riley\nvance"}, true, "query", "query: must not contain control characters such as newlines or tabs"},
			{"NUL in query", ContactFilter{Query: "a\x00b"}, true, "query", "query: must not contain control characters..."},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := t.Context()
				_, err := s.ListContacts(ctx, tt.f)
				assertInvalid(t, err, tt.field, tt.want)
				_, err = s.CountRestricted(ctx, tt.f)
				if tt.queryOnly {
					assertInvalid(t, err, tt.field, tt.want)
				} else {
					assert.NoError(t, err, "CountRestricted ignores limit and offset")
				}
			})
		}
	})
}

func TestCreateDealInvalid(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		tests := []struct {
			name   string
			change func(*NewDeal)
			field  string
			want   string
		}{
			{"unknown contact", func(d *NewDeal) { d.ContactID = 9999 }, "contact_id", "contact_id: no contact has id 9999"},
			{"zero contact", func(d *NewDeal) { d.ContactID = 0 }, "contact_id", "contact_id: 0 is not a valid id; ids are positive"},
			{"negative contact", func(d *NewDeal) { d.ContactID = -7 }, "contact_id", "contact_id: -7 is not a valid id; ids are positive"},
			{"empty title", func(d *NewDeal) { d.Title = "  " }, "title", "title: must not be empty"},
			{"long title", func(d *NewDeal) { d.Title = strings.Repeat("t", 201) }, "title", "title: is 201 characters long; at most 200 are allowed"},
			{"negative amount", func(d *NewDeal) { d.Amount = -1 }, "amount", "amount: -1 is negative; give zero or more, in minor units (cents for USD)"},
			{"empty currency", func(d *NewDeal) { d.Currency = "" }, "currency", "currency: must not be empty; use a three-letter ISO 4217 code such as USD or EUR"},
			{"lower-case currency", func(d *NewDeal) { d.Currency = "usd" }, "currency", `currency: "usd" is not a currency code; use three upper-case ISO 4217 letters such as USD or EUR`},
			{"short currency", func(d *NewDeal) { d.Currency = "US" }, "currency", `currency: "US" is not a currency code...`},
			{"long currency", func(d *NewDeal) { d.Currency = "USDT" }, "currency", `currency: "USDT" is not a currency code...`},
			{"symbol in currency", func(d *NewDeal) { d.Currency = "US$" }, "currency", `currency: "US$" is not a currency code...`},
			{"padded currency", func(d *NewDeal) { d.Currency = " USD" }, "currency", `currency: " USD" is not a currency code...`},
			{"unknown stage", func(d *NewDeal) { d.Stage = "closed" }, "stage", `stage: "closed" is not a stage; use one of lead, qualified, proposal, negotiation, won, lost`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				d := NewDeal{ContactID: 1, Title: "Valid deal", Amount: 100, Currency: "USD"}
				tt.change(&d)
				_, err := s.CreateDeal(t.Context(), d)
				assertInvalid(t, err, tt.field, tt.want)
			})
		}
		assertUnchanged(t, s)
	})
}

func TestUpdateDealStageInvalid(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		for _, stage := range []Stage{"done", "", "won!"} {
			t.Run(string(stage), func(t *testing.T) {
				_, err := s.UpdateDealStage(t.Context(), 1, stage)
				assertInvalid(t, err, "stage", fmt.Sprintf("stage: %q is not a stage; use one of lead, qualified, proposal, negotiation, won, lost", stage))
			})
		}
		assertUnchanged(t, s)
	})
}

func TestDealFilterInvalid(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		tests := []struct {
			name  string
			f     DealFilter
			field string
			want  string
		}{
			{"unknown stage", DealFilter{Stage: "open"}, "stage", `stage: "open" is not a stage...`},
			{"negative contact", DealFilter{ContactID: -1}, "contact_id", "contact_id: -1 is not a valid id; ids are positive"},
			{"limit too large", DealFilter{Limit: 1000}, "limit", "limit: 1000 is out of range; use 1 to 200, or 0 for the default of 50"},
			{"negative limit", DealFilter{Limit: -1}, "limit", "limit: -1 is out of range..."},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := s.ListDeals(t.Context(), tt.f)
				assertInvalid(t, err, tt.field, tt.want)
			})
		}
	})
}

func TestValidEmails(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		for _, email := range []string{
			"a@example.com",
			"first.last+tag@sub.example.co.uk",
			"o'brien@example.ie",
			"x@localhost",
		} {
			t.Run(email, func(t *testing.T) {
				c, err := s.CreateContact(t.Context(), NewContact{Name: "N", Email: email})
				require.NoError(t, err)
				assert.Equal(t, email, c.Email)
			})
		}
	})
}

// TestLookalikesRefused: an approver reads an email or a phone number on a
// phone screen; characters that can pass for others are refused.
func TestLookalikesRefused(t *testing.T) {
	_, err := NewContact{Name: "Priya", Email: "priya.raman@ledgerst\u043ene.example.com"}.Validate()
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "email", ve.Field)
	for _, phone := range []string{"+44 20 7946 O321", "\u05d0 0000 7946 20 44+", "+1\u00a0415"} {
		_, err = ContactUpdate{Phone: &phone}.Validate()
		require.ErrorAs(t, err, &ve, phone)
		assert.Equal(t, "phone", ve.Field)
	}
	for _, phone := range []string{"+1 (415) 555-0142", "020.7946.0321 x12", ""} {
		_, err = ContactUpdate{Phone: &phone}.Validate()
		assert.NoError(t, err, phone)
	}
	got, err := NewContact{Name: " Noor ", Email: "noor@example.com", Sector: "Logistics"}.Validate()
	require.NoError(t, err)
	assert.Equal(t, NewContact{Name: "Noor", Email: "noor@example.com", Sector: "logistics", Classification: Internal}, got, "returned as it would be stored")
}
