DROP TABLE counters;
DROP TABLE idempotency_keys;
DROP TABLE provision_log;
DROP TABLE daily_statistics;
DROP TABLE inbox;
DROP TABLE outbox;
DROP TABLE change_history;
DROP TABLE residents;
