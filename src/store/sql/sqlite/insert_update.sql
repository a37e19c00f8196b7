-- $1: platform, $2: update id, $3: chat, $4: payload, $5: now (ms), $6: replica.
-- A row that exists already (a resent update) is left as it is.
INSERT INTO inbound_updates (platform, update_id, chat_key, payload, received_at, received_by)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (platform, update_id) DO NOTHING
