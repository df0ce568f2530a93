-- W3C trace id of the update (the same at the CS, the prefecture and the national server).
ALTER TABLE change_history ADD COLUMN trace_id VARCHAR(32);
