-- The call center's tickets. Times are microseconds since the Unix epoch (UTC).
CREATE TABLE tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    org_code TEXT,
    reporter TEXT NOT NULL,
    channel TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    category TEXT,
    nodes TEXT NOT NULL,
    answer TEXT,
    -- The recovery arrangement of a fault: {"vendor", "expected_at"} (JSON), or NULL.
    recovery TEXT,
    filed_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    first_answer_at BIGINT,
    -- The last change (a closed ticket's closing time: closed is final).
    updated_at BIGINT NOT NULL
);
CREATE INDEX tickets_org ON tickets (org_code, id);
CREATE INDEX tickets_state ON tickets (state, id);

-- Every change of a ticket, with who and when. Append-only (guarded by triggers, see store::db).
CREATE TABLE ticket_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id BIGINT NOT NULL REFERENCES tickets (id),
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX ticket_history_ticket ON ticket_history (ticket_id, id);

-- The alerts seen by the webhook: one row per firing (fingerprint, startsAt).
CREATE TABLE alert_links (
    fingerprint TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ticket_id BIGINT NOT NULL REFERENCES tickets (id),
    resolved_at BIGINT,
    PRIMARY KEY (fingerprint, starts_at)
);
CREATE INDEX alert_links_ticket ON alert_links (ticket_id);
