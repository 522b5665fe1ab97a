package seed

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/crm"
)

var update = flag.Bool("update", false, "rewrite seed.json from the crm package's seed")

// TestSeedMatchesCRM keeps the peers' data equal to what crm-mcp serves: a
// fresh SQLite store, read back through the crm package.
func TestSeedMatchesCRM(t *testing.T) {
	ctx := context.Background()
	store, err := crm.Open(ctx, filepath.Join(t.TempDir(), "crm.db"))
	require.NoError(t, err)
	defer store.Close()

	contacts, err := store.ListContacts(ctx, crm.ContactFilter{Limit: crm.MaxLimit, IncludeRestricted: true})
	require.NoError(t, err)
	deals, err := store.ListDeals(ctx, crm.DealFilter{Limit: crm.MaxLimit, IncludeRestricted: true})
	require.NoError(t, err)
	var want Data
	for _, c := range contacts {
		want.Contacts = append(want.Contacts, Contact{ID: c.ID, Name: c.Name, Email: c.Email, Phone: c.Phone,
			Company: c.Company, Sector: c.Sector, Classification: string(c.Classification), Owner: c.Owner})
	}
	for _, d := range deals {
		want.Deals = append(want.Deals, Deal{ID: d.ID, ContactID: d.ContactID, Title: d.Title, Amount: d.Amount,
			Currency: d.Currency, Stage: string(d.Stage)})
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	require.NoError(t, enc.Encode(want))
	if *update {
		require.NoError(t, os.WriteFile("seed.json", buf.Bytes(), 0o644))
		return // the embedded copy is the old one until the next build
	}
	got, err := os.ReadFile("seed.json")
	require.NoError(t, err)
	require.Equal(t, buf.String(), string(got), "seed.json differs from the crm package's seed: run go test ./bench/peers/seed -update")

	d, err := Load()
	require.NoError(t, err)
	require.Equal(t, want, d)
}
