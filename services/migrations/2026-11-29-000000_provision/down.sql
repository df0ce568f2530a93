DROP INDEX residents_four_items;
DROP TABLE provision_log;
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
INSERT INTO counters (name, value) VALUES ('provision_log', 0);
