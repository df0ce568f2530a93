-- Portable schema: this file runs unchanged on SQLite and PostgreSQL.
-- Dates are ISO-8601 text (YYYY-MM-DD), instants RFC 3339 text (UTC), JSON documents text.
-- Ids are assigned by the service from the `counters` table, inside the writing transaction,
-- because SQLite and PostgreSQL have no common auto-increment syntax.

-- 本人確認情報: the current record of each resident.
CREATE TABLE residents (
    resident_code VARCHAR(11) PRIMARY KEY NOT NULL,
    individual_number VARCHAR(12),
    name TEXT NOT NULL,
    name_kana TEXT NOT NULL,
    former_surname TEXT,
    alias TEXT,
    birth_date VARCHAR(10) NOT NULL,
    sex VARCHAR(8) NOT NULL,
    address TEXT NOT NULL,
    municipality_code VARCHAR(6) NOT NULL,
    status VARCHAR(16) NOT NULL CHECK (status IN ('active', 'moved_out', 'deceased')),
    updated_at VARCHAR(40) NOT NULL
);
CREATE UNIQUE INDEX residents_individual_number ON residents (individual_number);
CREATE INDEX residents_municipality_code ON residents (municipality_code);

-- Append-only history of changes (異動), one row per accepted update.
CREATE TABLE change_history (
    id BIGINT PRIMARY KEY NOT NULL,
    resident_code VARCHAR(11) NOT NULL,
    reason VARCHAR(16) NOT NULL,
    change_date VARCHAR(10) NOT NULL,
    municipality_code VARCHAR(6) NOT NULL,
    payload TEXT NOT NULL,
    recorded_at VARCHAR(40) NOT NULL,
    source_sender VARCHAR(64) NOT NULL,
    source_seq BIGINT NOT NULL
);
CREATE INDEX change_history_resident ON change_history (resident_code, id);
CREATE UNIQUE INDEX change_history_source ON change_history (source_sender, source_seq);
CREATE INDEX change_history_change_date ON change_history (change_date, municipality_code);

-- Updates waiting to be delivered upstream (at-least-once, in seq order).
CREATE TABLE outbox (
    seq BIGINT PRIMARY KEY NOT NULL,
    payload TEXT NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    sent_at VARCHAR(40)
);

-- Updates applied from downstream senders; the primary key makes applying idempotent.
CREATE TABLE inbox (
    sender VARCHAR(64) NOT NULL,
    seq BIGINT NOT NULL,
    applied_at VARCHAR(40) NOT NULL,
    PRIMARY KEY (sender, seq)
);

-- Output of the daily statistics batch.
CREATE TABLE daily_statistics (
    date VARCHAR(10) NOT NULL,
    municipality_code VARCHAR(6) NOT NULL,
    reason VARCHAR(16) NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (date, municipality_code, reason)
);

-- Append-only log of every provision of 本人確認情報 to an agency.
CREATE TABLE provision_log (
    id BIGINT PRIMARY KEY NOT NULL,
    at VARCHAR(40) NOT NULL,
    recipient TEXT NOT NULL,
    affair TEXT NOT NULL,
    reason TEXT NOT NULL,
    items TEXT NOT NULL,
    resident_code VARCHAR(11) NOT NULL
);
CREATE INDEX provision_log_resident ON provision_log (resident_code, id);

-- Results of requests carrying an Idempotency-Key, replayed when the key is retried.
CREATE TABLE idempotency_keys (
    idempotency_key VARCHAR(255) PRIMARY KEY NOT NULL,
    request TEXT NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_at VARCHAR(40) NOT NULL
);

-- Id sequences; the `writes` row is updated first by every writing transaction, which
-- serialises writers on both backends.
CREATE TABLE counters (
    name VARCHAR(32) PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('writes', 0);
INSERT INTO counters (name, value) VALUES ('change_history', 0);
INSERT INTO counters (name, value) VALUES ('outbox', 0);
INSERT INTO counters (name, value) VALUES ('provision_log', 0);
