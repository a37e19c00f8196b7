-- $1: platform, $2: update id, $3: replica, $4: now. Renews the
-- replica's claim as it starts the reply; no row when another took it.
UPDATE inbound_updates SET claimed_at = $4
WHERE platform = $1 AND update_id = $2 AND claimed_by = $3 AND done_at IS NULL
