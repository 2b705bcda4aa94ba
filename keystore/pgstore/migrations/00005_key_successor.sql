-- +goose Up
-- replaced_by names the key a key was rolled to. A key is rolled at most
-- once: rolling it again in its grace period would leave several live
-- successors. Keys rolled before this column existed take their successor
-- from the audit log (the latest roll, should there be several).
ALTER TABLE api_keys ADD COLUMN replaced_by text NOT NULL DEFAULT '';

UPDATE api_keys AS k SET replaced_by = e.new_key_id
FROM (
    SELECT DISTINCT ON (target) target, details->>'new_key_id' AS new_key_id
    FROM audit_events
    WHERE action = 'key.rolled' AND details ? 'new_key_id'
    ORDER BY target, id DESC
) AS e
WHERE k.id = e.target;

-- +goose Down
ALTER TABLE api_keys DROP COLUMN replaced_by;
