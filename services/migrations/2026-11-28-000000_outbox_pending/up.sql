-- The relay reads the unsent outbox rows in seq order; a partial index keeps that cheap as the
-- delivered rows accumulate (portable: SQLite and PostgreSQL both support partial indexes).
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
