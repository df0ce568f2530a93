-- Provision of 本人確認情報 to agencies and disclosure to residents (開示). Portable.
-- The log gets its ids from the node (time-ordered text, see provision.rs), not from the
-- `counters` table: every provision writes a log row, and a shared counter row would make all
-- of them wait for one another. Nothing was written to the old table (it had no writer).
-- The append-only rule (no UPDATE, DELETE or TRUNCATE) is a trigger per backend that the node
-- installs after the migrations (db::install_guards): its syntax is not portable.
DROP TABLE provision_log;
DELETE FROM counters WHERE name = 'provision_log';
CREATE TABLE provision_log (
    id VARCHAR(40) PRIMARY KEY NOT NULL,
    at VARCHAR(40) NOT NULL,
    recipient VARCHAR(128) NOT NULL,
    affair VARCHAR(128) NOT NULL,
    reason TEXT NOT NULL,
    query_kind VARCHAR(16) NOT NULL,
    resident_code VARCHAR(11),
    items TEXT NOT NULL,
    outcome VARCHAR(24) NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX provision_log_resident ON provision_log (resident_code, id);
-- Queries by the four items (name, birth date, sex, address).
CREATE INDEX residents_four_items ON residents (name, birth_date);
