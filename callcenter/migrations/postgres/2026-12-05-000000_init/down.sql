DROP TABLE alert_links;
DROP TABLE ticket_history;
DROP TABLE tickets;
