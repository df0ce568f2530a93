DROP INDEX outbox_pending;
