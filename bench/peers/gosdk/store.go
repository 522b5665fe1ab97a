package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/crm-mcp/crm-mcp/bench/peers/seed"
)

// The types are shaped like crm-mcp's tool outputs, so every server in the
// comparison returns the same JSON.
type contact struct {
	ID             int64     `json:"id"`
	Name           string    `json:"name"`
	Email          string    `json:"email"`
	Phone          string    `json:"phone"`
	Company        string    `json:"company"`
	Sector         string    `json:"sector"`
	Classification string    `json:"classification"`
	Owner          string    `json:"owner"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

type deal struct {
	ID        int64     `json:"id"`
	ContactID int64     `json:"contact_id"`
	Title     string    `json:"title"`
	Amount    int64     `json:"amount"`
	Currency  string    `json:"currency"`
	Stage     string    `json:"stage"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

const (
	defaultLimit = 50
	maxLimit     = 200
	restricted   = "restricted"
)

var (
	classifications = []string{"public", "internal", restricted}
	stages          = []string{"lead", "qualified", "proposal", "negotiation", "won", "lost"}
	errNotFound     = errors.New("not found")
)

// store is the CRM in memory: slices in id order behind one lock, as a
// user would write it for a demo.
type store struct {
	mu       sync.RWMutex
	contacts []contact
	deals    []deal
}

func newStore() (*store, error) {
	d, err := seed.Load()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	s := &store{}
	for _, c := range d.Contacts {
		s.contacts = append(s.contacts, contact{ID: c.ID, Name: c.Name, Email: c.Email, Phone: c.Phone, Company: c.Company,
			Sector: c.Sector, Classification: c.Classification, Owner: c.Owner, CreatedAt: now, UpdatedAt: now})
	}
	for _, dl := range d.Deals {
		s.deals = append(s.deals, deal{ID: dl.ID, ContactID: dl.ContactID, Title: dl.Title, Amount: dl.Amount,
			Currency: dl.Currency, Stage: dl.Stage, CreatedAt: now, UpdatedAt: now})
	}
	return s, nil
}

func checkLimit(limit int) (int, error) {
	switch {
	case limit == 0:
		return defaultLimit, nil
	case limit < 1 || limit > maxLimit:
		return 0, fmt.Errorf("limit must be between 1 and %d, got %d", maxLimit, limit)
	}
	return limit, nil
}

func matches(c *contact, q string) bool {
	if q == "" {
		return true
	}
	q = strings.ToLower(q)
	for _, f := range []string{c.Name, c.Email, c.Company, c.Sector} {
		if strings.Contains(strings.ToLower(f), q) {
			return true
		}
	}
	return false
}

// listContacts returns the matching contacts and how many restricted ones
// it withheld.
func (s *store) listContacts(q string, limit, offset int, includeRestricted bool) ([]contact, int, error) {
	limit, err := checkLimit(limit)
	if err != nil {
		return nil, 0, err
	}
	if offset < 0 {
		return nil, 0, fmt.Errorf("offset must not be negative, got %d", offset)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []contact{}
	withheld := 0
	for i := range s.contacts {
		c := &s.contacts[i]
		if !matches(c, q) {
			continue
		}
		if c.Classification == restricted && !includeRestricted {
			withheld++
			continue
		}
		if offset > 0 {
			offset--
			continue
		}
		if len(out) < limit {
			out = append(out, *c)
		}
	}
	return out, withheld, nil
}

func (s *store) getContact(id int64) (contact, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.contactLocked(id)
}

func (s *store) contactLocked(id int64) (contact, error) {
	if id < 1 || id > int64(len(s.contacts)) {
		return contact{}, fmt.Errorf("contact %d: %w", id, errNotFound)
	}
	return s.contacts[id-1], nil
}

func validateContact(c *contact) error {
	c.Name, c.Email = strings.TrimSpace(c.Name), strings.TrimSpace(c.Email)
	c.Sector = strings.ToLower(strings.TrimSpace(c.Sector))
	c.Classification = strings.ToLower(strings.TrimSpace(c.Classification))
	switch {
	case c.Name == "":
		return errors.New("name is required")
	case !strings.Contains(c.Email, "@"):
		return fmt.Errorf("email %q is not an email address", c.Email)
	case !slices.Contains(classifications, c.Classification):
		return fmt.Errorf("classification %q is not one of %s", c.Classification, strings.Join(classifications, ", "))
	}
	return nil
}

func (s *store) createContact(c contact) (contact, error) {
	if c.Classification == "" {
		c.Classification = "internal"
	}
	if err := validateContact(&c); err != nil {
		return contact{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c.CreatedAt = time.Now().UTC()
	c.UpdatedAt = c.CreatedAt
	c.ID = int64(len(s.contacts) + 1)
	s.contacts = append(s.contacts, c)
	return c, nil
}

func (s *store) updateContact(id int64, change func(*contact)) (contact, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.contactLocked(id)
	if err != nil {
		return contact{}, err
	}
	change(&c)
	if err := validateContact(&c); err != nil {
		return contact{}, err
	}
	c.UpdatedAt = time.Now().UTC()
	s.contacts[id-1] = c
	return c, nil
}

func (s *store) listDeals(stage string, contactID int64, limit int, includeRestricted bool) ([]deal, error) {
	limit, err := checkLimit(limit)
	if err != nil {
		return nil, err
	}
	if stage != "" && !slices.Contains(stages, stage) {
		return nil, fmt.Errorf("stage %q is not one of %s", stage, strings.Join(stages, ", "))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []deal{}
	for _, d := range s.deals {
		if (stage != "" && d.Stage != stage) || (contactID != 0 && d.ContactID != contactID) {
			continue
		}
		if c, _ := s.contactLocked(d.ContactID); c.Classification == restricted && !includeRestricted {
			continue
		}
		if len(out) < limit {
			out = append(out, d)
		}
	}
	return out, nil
}

func (s *store) createDeal(d deal) (deal, error) {
	if d.Stage == "" {
		d.Stage = "lead"
	}
	switch {
	case strings.TrimSpace(d.Title) == "":
		return deal{}, errors.New("title is required")
	case d.Amount < 0:
		return deal{}, fmt.Errorf("amount must not be negative, got %d", d.Amount)
	case len(d.Currency) != 3 || strings.ToUpper(d.Currency) != d.Currency:
		return deal{}, fmt.Errorf("currency %q is not an ISO 4217 code like USD", d.Currency)
	case !slices.Contains(stages, d.Stage):
		return deal{}, fmt.Errorf("stage %q is not one of %s", d.Stage, strings.Join(stages, ", "))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.contactLocked(d.ContactID); err != nil {
		return deal{}, err
	}
	d.CreatedAt = time.Now().UTC()
	d.UpdatedAt = d.CreatedAt
	d.ID = int64(len(s.deals) + 1)
	s.deals = append(s.deals, d)
	return d, nil
}

func (s *store) updateDealStage(id int64, stage string) (deal, error) {
	if !slices.Contains(stages, stage) {
		return deal{}, fmt.Errorf("stage %q is not one of %s", stage, strings.Join(stages, ", "))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id < 1 || id > int64(len(s.deals)) {
		return deal{}, fmt.Errorf("deal %d: %w", id, errNotFound)
	}
	d := &s.deals[id-1]
	d.Stage = stage
	d.UpdatedAt = time.Now().UTC()
	return *d, nil
}
