-- As migrations/sqlite/003_outbox_claim.sql: each claim of a reply gets
-- the next number, and Done and Retry name the claim they finish, so an
-- instance whose lease ran out cannot delete or reschedule a reply that
-- another instance has claimed since.
ALTER TABLE outbox ADD COLUMN claim BIGINT NOT NULL DEFAULT 0;
