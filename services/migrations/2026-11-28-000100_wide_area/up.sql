-- Wide-area services: the transfer-out/in special procedure (転入転出の特例) and the wide-area
-- issuance of resident-record copies (住民票の写しの広域交付). Portable (SQLite and PostgreSQL).

-- 本籍 (permanent domicile) and its 筆頭者 (head of the family register): kept at the CS only
-- (never relayed upstream), never part of a wide-area copy.
ALTER TABLE residents ADD COLUMN permanent_domicile TEXT;
ALTER TABLE residents ADD COLUMN domicile_head TEXT;

-- Messages for the nodes below (prefecture: for its CSs; national: for the prefectures), kept
-- until the child has fetched them and moved its cursor past them (GET /v1/mailbox?after=).
CREATE TABLE mailbox (
    id BIGINT PRIMARY KEY NOT NULL,
    recipient VARCHAR(64) NOT NULL,
    message_id VARCHAR(128) NOT NULL,
    payload TEXT NOT NULL,
    created_at VARCHAR(40) NOT NULL,
    delivered_at VARCHAR(40)
);
CREATE UNIQUE INDEX mailbox_message ON mailbox (message_id);
CREATE INDEX mailbox_recipient ON mailbox (recipient, id);

-- One special-procedure move as seen by one end: the source (A, where the move-out was filed)
-- or the destination (B, where the person moves in).
CREATE TABLE transfers (
    transfer_id VARCHAR(64) PRIMARY KEY NOT NULL,
    side VARCHAR(16) NOT NULL CHECK (side IN ('source', 'destination')),
    state VARCHAR(24) NOT NULL,
    resident_code VARCHAR(11) NOT NULL,
    from_municipality VARCHAR(6) NOT NULL,
    to_municipality VARCHAR(6) NOT NULL,
    planned_date VARCHAR(10) NOT NULL,
    planned_address TEXT NOT NULL,
    record TEXT NOT NULL,
    pin_hash TEXT NOT NULL,
    pin_failures INTEGER NOT NULL,
    move_date VARCHAR(10),
    new_address TEXT,
    note TEXT,
    created_at VARCHAR(40) NOT NULL,
    updated_at VARCHAR(40) NOT NULL
);
CREATE INDEX transfers_resident ON transfers (resident_code, side);

-- One wide-area issuance as seen by one end: the issuing municipality (交付地) or the home
-- municipality (住所地).
CREATE TABLE issuances (
    issuance_id VARCHAR(64) PRIMARY KEY NOT NULL,
    side VARCHAR(16) NOT NULL CHECK (side IN ('issuing', 'home')),
    state VARCHAR(16) NOT NULL,
    resident_code VARCHAR(11) NOT NULL,
    issuing_municipality VARCHAR(6) NOT NULL,
    home_municipality VARCHAR(6) NOT NULL,
    idempotency_key VARCHAR(255),
    request TEXT NOT NULL,
    answer TEXT,
    created_at VARCHAR(40) NOT NULL,
    updated_at VARCHAR(40) NOT NULL
);
CREATE UNIQUE INDEX issuances_key ON issuances (idempotency_key);

-- Append-only log of the wide-area issuances at this end.
CREATE TABLE issuance_log (
    id BIGINT PRIMARY KEY NOT NULL,
    at VARCHAR(40) NOT NULL,
    issuance_id VARCHAR(64) NOT NULL,
    side VARCHAR(16) NOT NULL,
    resident_code VARCHAR(11) NOT NULL,
    counterpart VARCHAR(6) NOT NULL,
    outcome VARCHAR(48) NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX issuance_log_issuance ON issuance_log (issuance_id, id);

INSERT INTO counters (name, value) VALUES ('mailbox', 0);
INSERT INTO counters (name, value) VALUES ('mailbox_cursor', 0);
INSERT INTO counters (name, value) VALUES ('transfers', 0);
INSERT INTO counters (name, value) VALUES ('issuances', 0);
INSERT INTO counters (name, value) VALUES ('issuance_log', 0);
