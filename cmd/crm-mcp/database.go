package main

import (
	"context"
	"strings"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/stepup/pgstate"
)

// Postgres, for several replicas sharing one CRM and one step-up state
// (CRM_DATABASE_URL), or the embedded SQLite file of one machine
// (CRM_DB_PATH).

// checkDatabase validates CRM_DATABASE_URL. Its value may hold a password,
// so no message quotes it.
func (c config) checkDatabase(check func(string, error)) {
	u := c.DatabaseURL.reveal()
	if u != "" && !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") {
		check("CRM_DATABASE_URL", varErrorf("CRM_DATABASE_URL", "must be a postgres:// or postgresql:// URL"))
	}
}

// databaseVar names the variable that chose the CRM database, for logs.
func (c config) databaseVar() string {
	if c.DatabaseURL != "" {
		return "CRM_DATABASE_URL"
	}
	return "CRM_DB_PATH"
}

// openStore opens the CRM database: Postgres when CRM_DATABASE_URL is set
// (no local file is written then), else the SQLite file at CRM_DB_PATH.
func (c config) openStore(ctx context.Context) (*crm.Store, error) {
	if c.DatabaseURL != "" {
		return crm.OpenPostgres(ctx, c.DatabaseURL.reveal())
	}
	return crm.Open(ctx, c.DBPath)
}

// openStepUpState opens the step-up state shared by the replicas, in the
// same Postgres as the CRM, or returns nil when the Guard keeps its state
// in memory (SQLite, or step-up off).
func (c config) openStepUpState(ctx context.Context) (*pgstate.State, error) {
	if c.DatabaseURL == "" || !c.stepUpOn() {
		return nil, nil
	}
	return pgstate.Open(ctx, c.DatabaseURL.reveal())
}

// databaseLogAttrs is the database part of the start-up log line.
func (c config) databaseLogAttrs() []any {
	return []any{"CRM_DATABASE_URL", c.DatabaseURL, "CRM_DB_PATH", c.DBPath}
}
