// Package seed is the demo CRM data the benchmark peers serve from memory:
// the same contacts and deals crm-mcp's SQLite store is seeded with (a test
// regenerates seed.json from the crm package with -update and fails when
// they differ), so every server in the comparison answers the same calls
// with the same records. The TypeScript peer reads seed.json directly.
package seed

import (
	_ "embed"
	"encoding/json"
	"fmt"
)

//go:embed seed.json
var seedJSON []byte

// Contact is a contact as crm-mcp's tools return it, without timestamps
// (the peers set them when they load the data).
type Contact struct {
	ID             int64  `json:"id"`
	Name           string `json:"name"`
	Email          string `json:"email"`
	Phone          string `json:"phone"`
	Company        string `json:"company"`
	Sector         string `json:"sector"`
	Classification string `json:"classification"`
	Owner          string `json:"owner"`
}

// Deal is a deal as crm-mcp's tools return it, without timestamps.
type Deal struct {
	ID        int64  `json:"id"`
	ContactID int64  `json:"contact_id"`
	Title     string `json:"title"`
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
	Stage     string `json:"stage"`
}

// Data is the whole seed.
type Data struct {
	Contacts []Contact `json:"contacts"`
	Deals    []Deal    `json:"deals"`
}

// Load returns a fresh copy of the seed, the caller's to change.
func Load() (Data, error) {
	var d Data
	if err := json.Unmarshal(seedJSON, &d); err != nil {
		return Data{}, fmt.Errorf("seed: seed.json: %w", err)
	}
	return d, nil
}
