// Package mtalab runs real mail programs for tests: a private Postfix
// instance started from a scratch directory, and an in-process SMTP sink
// that records what Postfix relays to it and fails on demand. It also
// runs private PostgreSQL clusters (StartPostgres) for tests that stop
// and start the database under replygate.
//
// The Postfix instance is built the way the lab in
// ../shared/recipes/postfix.md is: its own main.cf and master.cf, queue and
// data directories, loopback ports chosen at run time, no DNS, no chroot,
// all mail relayed to the sink, logging to a file through postlogd, and
// Cyrus SASL from a private sasldb. The caller supplies the lines an admin
// would add (contrib/postfix/*.cf); mtalab moves every inet service in them
// to a free loopback port and can append -o lines to a service.
//
// It needs root (Postfix's master and the sendmail command's postdrop
// check ownership) and Debian's postfix and sasl2-bin packages. A missing
// program skips the test, or fails it when CI=true (see Need).
//
// It leaves to its callers what runs behind Postfix (the milter) and what
// a test asserts; it waits by polling ports, sockets and the sink with a
// deadline, never by sleeping a guessed time.
package mtalab
