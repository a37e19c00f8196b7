-- $1: platform, $2: update id, $3: now.
UPDATE inbound_updates SET done_at = $3, payload = NULL, sent = NULL
WHERE platform = $1 AND update_id = $2
