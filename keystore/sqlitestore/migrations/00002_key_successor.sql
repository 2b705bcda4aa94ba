-- +goose Up
-- replaced_by names the key a key was rolled to (as in PostgreSQL's
-- 00005_key_successor): a key is rolled at most once. Keys rolled before
-- take their successor from the audit log, the latest roll first.
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT NOT NULL DEFAULT '';

UPDATE api_keys SET replaced_by = COALESCE((
    SELECT json_extract(details, '$.new_key_id') FROM audit_events
    WHERE action = 'key.rolled' AND target = api_keys.id AND json_extract(details, '$.new_key_id') IS NOT NULL
    ORDER BY id DESC LIMIT 1), '');

-- +goose Down
ALTER TABLE api_keys DROP COLUMN replaced_by;
