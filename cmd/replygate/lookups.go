package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/replygate/replygate/vacation/store"
)

// lookups answers the milter's per-message questions (a recipient's
// vacation aliases, a sender's stamping opt-in) from memory: the MTA waits
// while they are asked, so they never touch the store. A loop reloads them
// from the store; a change made with `replygate vacation` or the API is
// seen within one refresh.
type lookups struct {
	aliases atomic.Pointer[map[string][]string]
	optIn   atomic.Pointer[map[string]bool]
	kick    chan struct{} // see changed
}

// changed asks run for a reload now: the API changed a setting, and
// this instance's gate should not wait for the next refresh.
func (l *lookups) changed() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// refreshEvery is how stale the lookups may be.
const refreshEvery = 5 * time.Second

// Aliases returns the other names of rcpt's user: its address and
// aliases, less rcpt itself.
func (l *lookups) Aliases(rcpt string) []string {
	if m := l.aliases.Load(); m != nil {
		return (*m)[store.Key(rcpt)]
	}
	return nil
}

// OptIn reports whether sender asked for all its mail to be stamped.
func (l *lookups) OptIn(sender string) bool {
	if m := l.optIn.Load(); m != nil {
		return (*m)[store.Key(sender)]
	}
	return false
}

// load reads both tables once.
func (l *lookups) load(ctx context.Context, st store.Store) error {
	vs, err := st.ListVacations(ctx)
	if err != nil {
		return err
	}
	aliases := make(map[string][]string)
	for _, v := range vs {
		names := append([]string{store.Key(v.Address)}, v.Aliases...)
		for i, n := range names {
			others := make([]string, 0, len(names)-1)
			others = append(others, names[:i]...)
			others = append(others, names[i+1:]...)
			if len(others) > 0 {
				aliases[store.Key(n)] = others
			}
		}
	}
	senders, err := st.StampAllSenders(ctx)
	if err != nil {
		return err
	}
	optIn := make(map[string]bool, len(senders))
	for _, s := range senders {
		optIn[store.Key(s)] = true
	}
	l.aliases.Store(&aliases)
	l.optIn.Store(&optIn)
	return nil
}

// run reloads the lookups until ctx is done, logging when they change
// size. A failure (the store is down) is logged once, not at every
// refresh, until a load succeeds again.
func (l *lookups) run(ctx context.Context, st store.Store, log *slog.Logger) {
	t := time.NewTicker(refreshEvery)
	defer t.Stop()
	last := [2]int{-1, -1}
	failing := false
	for {
		lctx, cancel := context.WithTimeout(ctx, 2*refreshEvery) // a store that hangs must not stop the refreshes
		err := l.load(lctx, st)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil && !failing:
			log.Warn("reloading aliases and stamping preferences failed; keeping the last", "err", err)
			failing = true
		case err != nil:
			log.Debug("reloading aliases and stamping preferences failed", "err", err)
		default:
			failing = false
			if n := [2]int{len(*l.aliases.Load()), len(*l.optIn.Load())}; n != last {
				log.Info("lookups loaded", "aliases", n[0], "opt_in", n[1])
				last = n
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.kick:
		}
	}
}
