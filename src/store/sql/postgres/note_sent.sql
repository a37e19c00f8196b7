-- $1: platform, $2: update id, $3: the ids sent in answer so far,
-- comma-separated.
UPDATE inbound_updates SET sent = $3
WHERE platform = $1 AND update_id = $2 AND done_at IS NULL
