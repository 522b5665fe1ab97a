package crm

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func jsonKeys(t *testing.T, v any) []string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

func TestListDeals(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		r := riley(t, s)

		all := allDeals(t, s)
		var rileyDeals, otherDeals []Deal
		for _, d := range all {
			if d.ContactID == r.ID {
				rileyDeals = append(rileyDeals, d)
			} else {
				otherDeals = append(otherDeals, d)
			}
		}
		require.NotEmpty(t, rileyDeals)

		tests := []struct {
			name string
			f    DealFilter
			want []Deal
		}{
			{"restricted contacts' deals left out by default", DealFilter{}, otherDeals},
			{"include restricted", DealFilter{IncludeRestricted: true}, all},
			{"restricted contact without the flag", DealFilter{ContactID: r.ID}, []Deal{}},
			{"restricted contact with the flag", DealFilter{ContactID: r.ID, IncludeRestricted: true}, rileyDeals},
			{"stage", DealFilter{Stage: StageWon}, filterDeals(otherDeals, func(d Deal) bool { return d.Stage == StageWon })},
			{"stage any case", DealFilter{Stage: " WON"}, filterDeals(otherDeals, func(d Deal) bool { return d.Stage == StageWon })},
			{"stage of the restricted deal", DealFilter{Stage: rileyDeals[0].Stage}, filterDeals(otherDeals, func(d Deal) bool { return d.Stage == rileyDeals[0].Stage })},
			{"unknown contact", DealFilter{ContactID: 9999}, []Deal{}},
			{"limit", DealFilter{Limit: 2}, otherDeals[:2]},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := s.ListDeals(ctx, tt.f)
				require.NoError(t, err)
				assert.Equal(t, tt.want, got)
			})
		}
	})
}

func filterDeals(ds []Deal, keep func(Deal) bool) []Deal {
	out := []Deal{}
	for _, d := range ds {
		if keep(d) {
			out = append(out, d)
		}
	}
	return out
}

func TestCreateDeal(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		at := time.Date(2031, 2, 3, 4, 5, 6, 7_000, time.UTC)
		s.now = func() time.Time { return at }

		d, err := s.CreateDeal(ctx, NewDeal{ContactID: 1, Title: " Expansion ", Amount: 0, Currency: "JPY"})
		require.NoError(t, err)
		assert.Equal(t, Deal{ID: d.ID, ContactID: 1, Title: "Expansion", Amount: 0, Currency: "JPY", Stage: StageLead, CreatedAt: at, UpdatedAt: at}, d)

		got, err := s.GetDeal(ctx, d.ID)
		require.NoError(t, err)
		assert.Equal(t, d, got)

		// A deal on the restricted contact is the caller's policy question, not
		// the store's.
		rd, err := s.CreateDeal(ctx, NewDeal{ContactID: riley(t, s).ID, Title: "Restricted extension", Amount: 1, Currency: "GBP", Stage: StageQualified})
		require.NoError(t, err)
		assert.Equal(t, StageQualified, rd.Stage)
	})
}

func TestUpdateDealStage(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		d, err := s.CreateDeal(ctx, NewDeal{ContactID: 1, Title: "Moving", Amount: 5, Currency: "USD"})
		require.NoError(t, err)

		later := d.UpdatedAt.Add(time.Minute)
		s.now = func() time.Time { return later }
		for _, st := range Stages() {
			got, err := s.UpdateDealStage(ctx, d.ID, st)
			require.NoError(t, err)
			assert.Equal(t, st, got.Stage)
			assert.Equal(t, later, got.UpdatedAt)
			assert.Equal(t, d.CreatedAt, got.CreatedAt)
		}
		got, err := s.UpdateDealStage(ctx, d.ID, "Negotiation")
		require.NoError(t, err)
		assert.Equal(t, StageNegotiation, got.Stage)

		_, err = s.UpdateDealStage(ctx, d.ID, "closed")
		require.Error(t, err)
		stored, err := s.GetDeal(ctx, d.ID)
		require.NoError(t, err)
		assert.Equal(t, StageNegotiation, stored.Stage, "a rejected stage changes nothing")
	})
}

func TestDealNotFound(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		for _, id := range []int64{0, -3, 9999} {
			_, err := s.GetDeal(ctx, id)
			assert.ErrorIs(t, err, ErrNotFound, "GetDeal(%d)", id)
			_, err = s.UpdateDealStage(ctx, id, StageWon)
			assert.ErrorIs(t, err, ErrNotFound, "UpdateDealStage(%d)", id)
		}
		_, err := s.GetDeal(ctx, 9999)
		assert.EqualError(t, err, "deal 9999: not found")
	})
}

func TestStages(t *testing.T) {
	assert.Equal(t, []Stage{"lead", "qualified", "proposal", "negotiation", "won", "lost"}, Stages())
	Stages()[0] = "mutated"
	assert.Equal(t, StageLead, Stages()[0], "Stages returns a copy")

	for _, st := range Stages() {
		assert.True(t, ValidStage(st), st)
	}
	for _, st := range []Stage{"", "Won", " won", "closed"} {
		assert.False(t, ValidStage(st), "ValidStage(%q)", st)
	}
}

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Classification
	}{{"public", Public}, {"Internal", Internal}, {" RESTRICTED ", Restricted}} {
		got, err := ParseClassification(tt.in)
		require.NoError(t, err)
		assert.Equal(t, tt.want, got)
	}
	st, err := ParseStage(" Proposal")
	require.NoError(t, err)
	assert.Equal(t, StageProposal, st)
	assert.Equal(t, []Classification{Public, Internal, Restricted}, Classifications())
}

func TestDealJSONNames(t *testing.T) {
	// The JSON names are the tools' structured output; renaming one breaks
	// clients.
	assert.ElementsMatch(t, []string{"id", "contact_id", "title", "amount", "currency", "stage", "created_at", "updated_at"}, jsonKeys(t, Deal{}))
}

// TestCreateDealIf: the deal is written only while its contact is still
// classified as the caller read it, checked in the INSERT itself.
func TestCreateDealIf(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		d, err := s.CreateDealIf(ctx, NewDeal{ContactID: 3, Title: " Side letter ", Amount: 100, Currency: "GBP"}, Internal)
		require.NoError(t, err)
		assert.Equal(t, "Side letter", d.Title)
		assert.Equal(t, int64(3), d.ContactID)

		before := allDeals(t, s)
		r := Restricted
		_, err = s.UpdateContact(ctx, 3, ContactUpdate{Classification: &r})
		require.NoError(t, err)
		_, err = s.CreateDealIf(ctx, NewDeal{ContactID: 3, Title: "Another", Amount: 1, Currency: "GBP"}, Internal)
		require.ErrorIs(t, err, ErrChanged)
		assert.Equal(t, before, allDeals(t, s), "nothing written")

		_, err = s.CreateDealIf(ctx, NewDeal{ContactID: 999, Title: "Nobody", Amount: 1, Currency: "GBP"}, Internal)
		var ve *ValidationError
		require.ErrorAs(t, err, &ve)
		assert.Equal(t, "contact_id", ve.Field)
		_, err = s.CreateDealIf(ctx, NewDeal{ContactID: 3, Title: "", Amount: 1, Currency: "GBP"}, Restricted)
		require.ErrorAs(t, err, &ve, "validated as CreateDeal is")
	})
}

// TestUpdateDealStageIf: the stage moves only while the deal's contact is
// still classified as the caller read it, checked in the UPDATE itself.
func TestUpdateDealStageIf(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		ctx := t.Context()
		d, err := s.UpdateDealStageIf(ctx, 3, "Won", Internal)
		require.NoError(t, err)
		assert.Equal(t, StageWon, d.Stage)

		r := Restricted
		_, err = s.UpdateContact(ctx, 3, ContactUpdate{Classification: &r})
		require.NoError(t, err)
		_, err = s.UpdateDealStageIf(ctx, 3, StageLost, Internal)
		require.ErrorIs(t, err, ErrChanged)
		got, err := s.GetDeal(ctx, 3)
		require.NoError(t, err)
		assert.Equal(t, StageWon, got.Stage, "nothing written")

		d, err = s.UpdateDealStageIf(ctx, 3, StageLost, Restricted)
		require.NoError(t, err)
		assert.Equal(t, StageLost, d.Stage)

		_, err = s.UpdateDealStageIf(ctx, 999, StageWon, Internal)
		require.ErrorIs(t, err, ErrNotFound)
		_, err = s.UpdateDealStageIf(ctx, 3, "closed", Restricted)
		var ve *ValidationError
		require.ErrorAs(t, err, &ve)
	})
}
