-- Each claim of a reply gets the next number: Done and Retry name the
-- claim they finish, so an instance whose lease ran out (paused, cut off
-- from the database) cannot delete or reschedule a reply that another
-- instance has claimed since.
ALTER TABLE outbox ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;
