package crm

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func names(cs []Contact) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

func TestListContactsQuery(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		for _, c := range []NewContact{
			{Name: "Percy Cent", Email: "percy@example.com", Company: "100% Organic"},
			{Name: "Una Score", Email: "una_score@example.com", Company: "Snake Case Ltd"},
			{Name: "Basil Slash", Email: "basil@example.com", Company: `Back\Slash Inc`},
		} {
			_, err := s.CreateContact(ctx, c)
			require.NoError(t, err)
		}

		tests := []struct {
			name              string
			query             string
			includeRestricted bool
			want              []string
		}{
			{"company lower case", "aegis", true, []string{"Riley Vance"}},
			{"company upper case", "AEGIS", true, []string{"Riley Vance"}},
			{"sector and company", "defence", true, []string{"Riley Vance"}},
			{"name", "riley", true, []string{"Riley Vance"}},
			{"email", "aegis-defence.example", true, []string{"Riley Vance"}},
			{"space trimmed", "  Aegis ", true, []string{"Riley Vance"}},
			{"restricted left out by default", "aegis", false, []string{}},
			{"sector", "healthcare", false, []string{"Tomás Ferreira", "Samuel Adeyemi"}},
			{"substring across sector and company", "health", false, []string{"Tomás Ferreira", "Samuel Adeyemi"}},
			{"percent is literal", "%", false, []string{"Percy Cent"}},
			{"percent inside", "0% org", false, []string{"Percy Cent"}},
			{"underscore is literal", "_", false, []string{"Una Score"}},
			{"underscore inside", "una_s", false, []string{"Una Score"}},
			{"underscore does not match any character", "una.s", false, []string{}},
			{"backslash is literal", `k\s`, false, []string{"Basil Slash"}},
			{"no match", "zzz-nothing", true, []string{}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := s.ListContacts(ctx, ContactFilter{Query: tt.query, IncludeRestricted: tt.includeRestricted})
				require.NoError(t, err)
				assert.Equal(t, tt.want, names(got))
			})
		}
	})
}

func TestListContactsRestricted(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()

		plain, err := s.ListContacts(ctx, ContactFilter{})
		require.NoError(t, err)
		assert.Len(t, plain, len(seedContacts)-1)
		for _, c := range plain {
			assert.NotEqual(t, Restricted, c.Classification, c.Name)
		}
		withheld, err := s.CountRestricted(ctx, ContactFilter{})
		require.NoError(t, err)
		assert.Equal(t, 1, withheld)

		all, err := s.ListContacts(ctx, ContactFilter{IncludeRestricted: true})
		require.NoError(t, err)
		assert.Len(t, all, len(seedContacts))
		assert.Contains(t, names(all), "Riley Vance")
	})
}

func TestRestrictedQuestions(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		tests := []struct {
			query string
			want  bool
		}{
			{"Aegis", true},
			{"riley", true},
			{"", true},
			{"DEFENCE", true},
			{"example.com", true},
			{"healthcare", false},
			{"Maya", false},
			{"zzz-nothing", false},
		}
		for _, tt := range tests {
			t.Run(tt.query, func(t *testing.T) {
				// Limit, Offset and IncludeRestricted must not change the answer.
				for _, f := range []ContactFilter{
					{Query: tt.query},
					{Query: tt.query, Limit: 1, Offset: 100, IncludeRestricted: true},
				} {
					n, err := s.CountRestricted(ctx, f)
					require.NoError(t, err)
					assert.Equal(t, tt.want, n > 0, "CountRestricted(%+v) = %d", f, n)
				}
			})
		}

		// A second restricted contact makes the count two.
		_, err := s.CreateContact(ctx, NewContact{Name: "Second Secret", Email: "second@example.com", Classification: Restricted})
		require.NoError(t, err)
		n, err := s.CountRestricted(ctx, ContactFilter{})
		require.NoError(t, err)
		assert.Equal(t, 2, n)
	})
}

func TestListContactsPaging(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		const extra = 60
		for i := range extra {
			_, err := s.CreateContact(ctx, NewContact{Name: fmt.Sprintf("Page Person %02d", i), Email: fmt.Sprintf("page%d@example.com", i)})
			require.NoError(t, err)
		}
		visible := len(seedContacts) - 1 + extra

		got, err := s.ListContacts(ctx, ContactFilter{})
		require.NoError(t, err)
		assert.Len(t, got, DefaultLimit, "limit 0 means the default")
		for i := 1; i < len(got); i++ {
			assert.Less(t, got[i-1].ID, got[i].ID, "ordered by id")
		}

		got, err = s.ListContacts(ctx, ContactFilter{Limit: MaxLimit})
		require.NoError(t, err)
		assert.Len(t, got, visible)

		page1, err := s.ListContacts(ctx, ContactFilter{Query: "page person", Limit: 25})
		require.NoError(t, err)
		page2, err := s.ListContacts(ctx, ContactFilter{Query: "page person", Limit: 25, Offset: 25})
		require.NoError(t, err)
		page3, err := s.ListContacts(ctx, ContactFilter{Query: "page person", Limit: 25, Offset: 50})
		require.NoError(t, err)
		assert.Len(t, page1, 25)
		assert.Len(t, page2, 25)
		assert.Len(t, page3, 10)
		assert.Equal(t, "Page Person 00", page1[0].Name)
		assert.Equal(t, "Page Person 25", page2[0].Name)
		assert.Equal(t, "Page Person 59", page3[9].Name)

		got, err = s.ListContacts(ctx, ContactFilter{Offset: 1000})
		require.NoError(t, err)
		assert.Empty(t, got)
		assert.NotNil(t, got, "an empty list, not nil, so JSON says []")

		// Offset counts only what the caller may see: restricted contacts are
		// not silently skipped positions.
		got, err = s.ListContacts(ctx, ContactFilter{Limit: 1, Offset: 5})
		require.NoError(t, err)
		require.Len(t, got, 1)
		assert.Equal(t, "Amara Nwosu", got[0].Name, "sixth visible contact, Riley Vance skipped")
	})
}

func TestCreateContact(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		at := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("CEST", 2*3600))
		s.now = func() time.Time { return at }
		// Kept in UTC, to the microsecond on either engine.
		stored := time.Date(2031, 5, 6, 5, 8, 9, 123456000, time.UTC)

		c, err := s.CreateContact(ctx, NewContact{
			Name:    "  Zoë Lindqvist ",
			Email:   " zoe@lindqvist.example.com ",
			Phone:   " +46 8 555 0100 ",
			Company: " Lindqvist AB ",
			Sector:  " Technology ",
			Owner:   " Jordan Lee ",
		})
		require.NoError(t, err)
		assert.Positive(t, c.ID)
		assert.Equal(t, Contact{
			ID:             c.ID,
			Name:           "Zoë Lindqvist",
			Email:          "zoe@lindqvist.example.com",
			Phone:          "+46 8 555 0100",
			Company:        "Lindqvist AB",
			Sector:         "technology",
			Classification: Internal, // the default
			Owner:          "Jordan Lee",
			CreatedAt:      stored,
			UpdatedAt:      stored,
		}, c)

		got, err := s.GetContact(ctx, c.ID)
		require.NoError(t, err)
		assert.Equal(t, c, got)

		r, err := s.CreateContact(ctx, NewContact{Name: "R", Email: "r@example.com", Classification: " Restricted"})
		require.NoError(t, err)
		assert.Equal(t, Restricted, r.Classification)
	})
}

func TestUpdateContact(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		created := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		s.now = func() time.Time { return created }
		c, err := s.CreateContact(ctx, NewContact{Name: "Old Name", Email: "old@example.com", Phone: "1", Company: "Old Co", Sector: "retail", Owner: "Sam Patel"})
		require.NoError(t, err)

		updated := created.Add(time.Hour)
		s.now = func() time.Time { return updated }
		ptr := func(s string) *string { return &s }
		public := Public

		// Nothing to change: refused, and nothing changes, not even
		// updated_at.
		_, err = s.UpdateContact(ctx, c.ID, ContactUpdate{})
		require.ErrorIs(t, err, ErrNothingToChange)
		same, err := s.GetContact(ctx, c.ID)
		require.NoError(t, err)
		assert.Equal(t, c, same)

		got, err := s.UpdateContact(ctx, c.ID, ContactUpdate{Name: ptr(" New Name "), Phone: ptr(""), Classification: &public})
		require.NoError(t, err)
		want := c
		want.Name, want.Phone, want.Classification, want.UpdatedAt = "New Name", "", Public, updated
		assert.Equal(t, want, got)
		assert.Equal(t, created, got.CreatedAt, "created_at unchanged")

		got, err = s.UpdateContact(ctx, c.ID, ContactUpdate{Email: ptr("new@example.com"), Company: ptr("New Co"), Sector: ptr("Energy"), Owner: ptr("Alex Kim")})
		require.NoError(t, err)
		want.Email, want.Company, want.Sector, want.Owner = "new@example.com", "New Co", "energy", "Alex Kim"
		assert.Equal(t, want, got)

		stored, err := s.GetContact(ctx, c.ID)
		require.NoError(t, err)
		assert.Equal(t, want, stored)

		// A rejected update changes nothing.
		_, err = s.UpdateContact(ctx, c.ID, ContactUpdate{Name: ptr("Fine"), Email: ptr("bad@")})
		require.Error(t, err)
		stored, err = s.GetContact(ctx, c.ID)
		require.NoError(t, err)
		assert.Equal(t, want, stored)
	})
}

func TestContactNotFound(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		name := "X"
		for _, id := range []int64{0, -1, 9999} {
			_, err := s.GetContact(ctx, id)
			assert.ErrorIs(t, err, ErrNotFound, "GetContact(%d)", id)
			_, err = s.UpdateContact(ctx, id, ContactUpdate{Name: &name})
			assert.ErrorIs(t, err, ErrNotFound, "UpdateContact(%d)", id)
			_, err = s.UpdateContact(ctx, id, ContactUpdate{})
			assert.ErrorIs(t, err, ErrNothingToChange, "empty UpdateContact(%d): refused before any read", id)
		}
		_, err := s.GetContact(ctx, 9999)
		assert.EqualError(t, err, "contact 9999: not found")
	})
}

func TestContactJSONNames(t *testing.T) {
	// The JSON names are the tools' structured output; renaming one breaks
	// clients.
	assert.ElementsMatch(t, []string{"id", "name", "email", "phone", "company", "sector", "classification", "owner", "created_at", "updated_at"}, jsonKeys(t, Contact{}))
}

// TestListContactsWithheld: the listing and its count of restricted
// matches in one statement agree with ListContacts and CountRestricted,
// for any query, limit and offset, an empty page included (which carries
// no row to read the count from).
func TestListContactsWithheld(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		_, err := s.CreateContact(ctx, NewContact{Name: "Second Secret", Email: "second@example.com", Company: "Aegis", Classification: Restricted})
		require.NoError(t, err)
		for _, f := range []ContactFilter{
			{},
			{Limit: 3},
			{Limit: 2, Offset: 5},
			{Offset: 100},
			{Query: "aegis"},
			{Query: "healthcare"},
			{Query: "zzz-nothing"},
			{Query: "example.com", Limit: 1, Offset: 1},
		} {
			got, n, err := s.ListContactsWithheld(ctx, f)
			require.NoError(t, err, "%+v", f)
			want, err := s.ListContacts(ctx, f)
			require.NoError(t, err)
			wantN, err := s.CountRestricted(ctx, f)
			require.NoError(t, err)
			assert.Equal(t, want, got, "%+v", f)
			assert.Equal(t, wantN, n, "%+v", f)
		}
		_, _, err = s.ListContactsWithheld(ctx, ContactFilter{IncludeRestricted: true})
		assert.Error(t, err, "a listing with the restricted contacts withholds nothing")
		_, _, err = s.ListContactsWithheld(ctx, ContactFilter{Limit: -1})
		var ve *ValidationError
		assert.ErrorAs(t, err, &ve, "validated as ListContacts is")
	})
}

// TestUpdateContactIf: the write applies only while the classification is
// the one read, in the same statement.
func TestUpdateContactIf(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		name := "Priya R."
		got, err := s.UpdateContactIf(ctx, 3, ContactUpdate{Name: &name}, Internal)
		require.NoError(t, err)
		assert.Equal(t, "Priya R.", got.Name)

		r := Restricted
		_, err = s.UpdateContact(ctx, 3, ContactUpdate{Classification: &r})
		require.NoError(t, err)
		other := "Someone Else"
		_, err = s.UpdateContactIf(ctx, 3, ContactUpdate{Name: &other}, Internal)
		require.ErrorIs(t, err, ErrChanged)
		now, err := s.GetContact(ctx, 3)
		require.NoError(t, err)
		assert.Equal(t, "Priya R.", now.Name, "nothing written")

		_, err = s.UpdateContactIf(ctx, 999, ContactUpdate{Name: &other}, Internal)
		require.ErrorIs(t, err, ErrNotFound)
		// An update that sets nothing is refused before anything is read,
		// whatever the record is.
		for _, id := range []int64{3, 6, 999} {
			_, err = s.UpdateContactIf(ctx, id, ContactUpdate{}, Internal)
			require.ErrorIs(t, err, ErrNothingToChange)
			assert.NotErrorIs(t, err, ErrChanged)
			assert.NotErrorIs(t, err, ErrNotFound)
		}
	})
}
