-- API bearer tokens. Only a hash of the secret is kept: a copy of the
-- database lets nobody in. id is the public handle that lists show and
-- revocation names; the token itself is "rgt_<id>_<secret>".
CREATE TABLE api_tokens (
	id         TEXT    NOT NULL PRIMARY KEY,
	name       TEXT    NOT NULL,
	hash       TEXT    NOT NULL,  -- hex SHA-256 of the secret
	admin      BOOLEAN NOT NULL,
	addresses  TEXT    NOT NULL,  -- the addresses it manages, Key form, one per line
	created_ms BIGINT  NOT NULL
);
