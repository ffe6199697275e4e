package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/replygate/replygate/vacation/store"
)

// openServeStore opens the daemon's store. SQLite must open, or serve
// stops. PostgreSQL need not answer: mail must keep flowing while it is
// down (DESIGN, robustness), so serve starts all the same, the milter
// accepts every message, each reply that needs the store is skipped
// (logged and counted), and the store connects, migrating if need be,
// as soon as the server answers: no restart. What no retry can mend (a
// bad DSN, a schema newer than this binary, a failing migration) still
// stops the start. up says whether the store answered; pg is the
// PostgreSQL store, nil for SQLite.
func openServeStore(dsn, stateDir string, log *slog.Logger) (st store.Store, pg *store.Postgres, up bool, err error) {
	if dsn == "" {
		st, err := openStore(dsn, stateDir)
		return st, nil, err == nil, err
	}
	pg, err = store.NewPostgres(dsn)
	if err != nil {
		return nil, nil, false, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch err := pg.Ping(ctx); {
	case err == nil:
		return pg, pg, true, nil
	case store.Unreachable(err):
		log.Error("store unreachable at start; serving mail without vacation replies until it answers", "err", err)
		return pg, pg, false, nil
	default:
		pg.Close()
		return nil, nil, false, err
	}
}

// storeWatchEvery is how often watchStore asks PostgreSQL whether it is
// there.
const storeWatchEvery = 5 * time.Second

// watchStore pings PostgreSQL until ctx is done and logs when it goes
// away and when it comes back, so the admin sees the outage as two lines
// beside the one warning per message that got no reply. It mends
// nothing itself: every store call connects anew when it must.
func watchStore(ctx context.Context, pg *store.Postgres, up bool, log *slog.Logger) {
	t := time.NewTicker(storeWatchEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, storeWatchEvery)
		err := pg.Ping(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && !up:
			log.Info("store reachable; vacation replies resume")
		case err != nil && up:
			log.Error("store unreachable; mail flows on without vacation replies until it answers", "err", err)
		}
		up = err == nil
	}
}
