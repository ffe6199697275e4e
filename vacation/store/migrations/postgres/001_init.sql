-- The first schema, as migrations/sqlite/001_init.sql: the same tables,
-- columns and keys, so one set of statements serves both backends. Times
-- are integer Unix milliseconds (BIGINT); addresses are stored in Key
-- form and looked up by it.

-- One row per user on vacation.
CREATE TABLE vacations (
	address       TEXT    NOT NULL PRIMARY KEY,
	subject       TEXT    NOT NULL,
	body          TEXT    NOT NULL,
	html_body     TEXT    NOT NULL,
	from_name     TEXT    NOT NULL,
	start_ms      BIGINT,            -- NULL: no start
	end_ms        BIGINT,            -- NULL: no end
	time_zone     TEXT    NOT NULL,
	interval_days INTEGER NOT NULL CHECK (interval_days >= 1),
	version       BIGINT  NOT NULL,
	updated_ms    BIGINT  NOT NULL
);

-- Every address that names a vacation: the vacation's own address at
-- pos 0 and its aliases from pos 1. The primary key makes FindVacation
-- one index lookup and lets no address name two users, even when two
-- instances write at once.
CREATE TABLE aliases (
	alias   TEXT    NOT NULL PRIMARY KEY,
	address TEXT    NOT NULL REFERENCES vacations (address) ON DELETE CASCADE,
	pos     INTEGER NOT NULL,
	UNIQUE (address, pos)
);

-- The reply log: user answered sender for the text of version; no other
-- reply until expires_ms. Keyed so one upsert decides.
CREATE TABLE reply_log (
	user_addr  TEXT   NOT NULL,
	sender     TEXT   NOT NULL,
	version    BIGINT NOT NULL,
	expires_ms BIGINT NOT NULL,
	PRIMARY KEY (user_addr, sender)
);
CREATE INDEX reply_log_expires ON reply_log (expires_ms);

-- The outbox. lease_until_ms 0: not leased.
CREATE TABLE outbox (
	id             BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	user_addr      TEXT    NOT NULL,
	mail_from      TEXT    NOT NULL,
	rcpt           TEXT    NOT NULL,
	message        BYTEA   NOT NULL,
	attempts       INTEGER NOT NULL DEFAULT 0,
	next_try_ms    BIGINT  NOT NULL,
	lease_until_ms BIGINT  NOT NULL DEFAULT 0,
	last_error     TEXT    NOT NULL DEFAULT '',
	created_ms     BIGINT  NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_try_ms, id);

-- Users who want all their own mail stamped X-Allow-Auto-Reply: no.
CREATE TABLE stamp_prefs (
	address   TEXT    NOT NULL PRIMARY KEY,
	stamp_all BOOLEAN NOT NULL
);
