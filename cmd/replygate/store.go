package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/replygate/replygate/vacation/store"
)

// storeFile is the SQLite database in the state directory.
const storeFile = "replygate.db"

// openStore opens the configured store: PostgreSQL when dsn names one
// (several MTAs sharing state), else SQLite in the state directory
// (created if missing).
func openStore(dsn, stateDir string) (store.Store, error) {
	if dsn != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return store.OpenPostgres(ctx, dsn)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return store.OpenSQLite(filepath.Join(stateDir, storeFile))
}
