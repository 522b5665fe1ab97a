package crm

import (
	"context"
	"fmt"
)

// seedContacts is the demo data. Every person and company is invented, the
// emails use example.com (RFC 2606) and the phone numbers ranges set aside
// for fiction. Riley Vance is the one restricted contact and the only one in
// the defence sector; the demo of step-up and the tests rely on both, so keep
// it that way, and keep "aegis", "riley", "vance" and "defence" out of every
// other contact.
var seedContacts = []NewContact{
	{Name: "Maya Okafor", Email: "maya.okafor@brightline.example.com", Phone: "+1 415 555 0142", Company: "Brightline Analytics", Sector: "technology", Classification: Public, Owner: "Jordan Lee"},
	{Name: "Tomás Ferreira", Email: "tomas.ferreira@bayview-health.example.com", Phone: "+1 617 555 0117", Company: "Bayview Health Partners", Sector: "healthcare", Classification: Public, Owner: "Sam Patel"},
	{Name: "Priya Raman", Email: "priya.raman@ledgerstone.example.com", Phone: "+44 20 7946 0321", Company: "Ledgerstone Capital", Sector: "finance", Classification: Internal, Owner: "Alex Kim"},
	{Name: "Gideon Marsh", Email: "gideon.marsh@harborlane.example.com", Phone: "+1 503 555 0178", Company: "Harbor Lane Outfitters", Sector: "retail", Classification: Public, Owner: "Jordan Lee"},
	{Name: "Ingrid Solberg", Email: "ingrid.solberg@fjordline.example.com", Phone: "+1 206 555 0190", Company: "Fjordline Renewables", Sector: "energy", Classification: Public, Owner: "Sam Patel"},
	{Name: "Riley Vance", Email: "riley.vance@aegis-defence.example.com", Phone: "+44 20 7946 0958", Company: "Aegis Defence Systems", Sector: "defence", Classification: Restricted, Owner: "Alex Kim"},
	{Name: "Amara Nwosu", Email: "amara.nwosu@westbrook-college.example.com", Phone: "+1 312 555 0133", Company: "Westbrook Community College", Sector: "education", Classification: Public, Owner: "Jordan Lee"},
	{Name: "Kenji Watanabe", Email: "kenji.watanabe@cobaltforge.example.com", Phone: "+1 313 555 0166", Company: "Cobalt Forge Manufacturing", Sector: "manufacturing", Classification: Internal, Owner: "Alex Kim"},
	{Name: "Lena Hoffmann", Email: "lena.hoffmann@meridiancloud.example.com", Phone: "+1 512 555 0105", Company: "Meridian Cloud Works", Sector: "technology", Classification: Public, Owner: "Sam Patel"},
	{Name: "Samuel Adeyemi", Email: "samuel.adeyemi@crescent-pharmacy.example.com", Phone: "+1 404 555 0181", Company: "Crescent Pharmacy Group", Sector: "healthcare", Classification: Public, Owner: "Jordan Lee"},
	{Name: "Chloe Martin", Email: "chloe.martin@quayside.example.com", Phone: "+44 117 496 0752", Company: "Quayside Mutual", Sector: "finance", Classification: Public, Owner: "Sam Patel"},
	{Name: "Oliver Brandt", Email: "oliver.brandt@tallgrass.example.com", Phone: "+1 816 555 0124", Company: "Tallgrass Grocers", Sector: "retail", Classification: Internal, Owner: "Alex Kim"},
}

// seedDeals cover every stage once. contact is an index into seedContacts.
var seedDeals = []struct {
	contact int
	deal    NewDeal
}{
	{0, NewDeal{Title: "Analytics platform renewal", Amount: 4_800_000, Currency: "USD", Stage: StageNegotiation}},
	{1, NewDeal{Title: "Patient portal pilot", Amount: 1_250_000, Currency: "USD", Stage: StageLead}},
	{2, NewDeal{Title: "Trading desk data feed", Amount: 9_500_000, Currency: "GBP", Stage: StageQualified}},
	{5, NewDeal{Title: "Secure communications hardening", Amount: 22_000_000, Currency: "GBP", Stage: StageProposal}},
	{7, NewDeal{Title: "Shop-floor sensor rollout", Amount: 3_100_000, Currency: "EUR", Stage: StageWon}},
	{11, NewDeal{Title: "Loyalty app integration", Amount: 750_000, Currency: "USD", Stage: StageLost}},
}

// seed fills an empty database with the demo data, all or nothing. The
// emptiness check is repeated inside the write transaction, which holds the
// write lock (see inTx), so two processes opening a new database at once
// seed it once; the check before it spares every later start the lock.
func (s *Store) seed(ctx context.Context) error {
	if empty, err := contactsEmpty(ctx, s.q.unprepared()); err != nil || !empty {
		return err
	}
	now := s.stamp()
	return s.inTx(ctx, func(tx querier) error {
		if empty, err := contactsEmpty(ctx, tx); err != nil || !empty {
			return err
		}
		ids := make([]int64, len(seedContacts))
		for i, c := range seedContacts {
			c, err := c.validate()
			if err != nil {
				return fmt.Errorf("seed contact %d: %w", i, err)
			}
			created, err := s.insertContact(ctx, tx, c, now)
			if err != nil {
				return fmt.Errorf("seed contact %d: %w", i, err)
			}
			ids[i] = created.ID
		}
		for i, sd := range seedDeals {
			d := sd.deal
			d.ContactID = ids[sd.contact]
			d, err := d.validate()
			if err != nil {
				return fmt.Errorf("seed deal %d: %w", i, err)
			}
			if _, err := s.insertDeal(ctx, tx, d, now, ""); err != nil {
				return fmt.Errorf("seed deal %d: %w", i, err)
			}
		}
		return nil
	})
}

func contactsEmpty(ctx context.Context, q querier) (bool, error) {
	var found bool
	if err := q.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM contacts)`).Scan(&found); err != nil {
		return false, fmt.Errorf("seed: %w", err)
	}
	return !found, nil
}
