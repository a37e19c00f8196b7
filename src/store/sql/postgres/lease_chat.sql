-- $1: platform, $2: chat, $3: replica, $4: until, $5: now. Takes the
-- chat when free, its lease expired, or held by $3 already (renewal); no
-- row changes when another replica holds it.
INSERT INTO chat_leases (platform, chat_key, replica, expires_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (platform, chat_key) DO UPDATE
SET replica = excluded.replica, expires_at = excluded.expires_at
WHERE chat_leases.replica = excluded.replica OR chat_leases.expires_at < $5
