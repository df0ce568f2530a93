DELETE FROM counters WHERE name IN ('mailbox', 'mailbox_cursor', 'transfers', 'issuances', 'issuance_log');
DROP TABLE issuance_log;
DROP TABLE issuances;
DROP TABLE transfers;
DROP TABLE mailbox;
ALTER TABLE residents DROP COLUMN domicile_head;
ALTER TABLE residents DROP COLUMN permanent_domicile;
