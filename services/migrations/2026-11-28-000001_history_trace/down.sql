ALTER TABLE change_history DROP COLUMN trace_id;
