-- $1: platform, $2: now (ms), $3: replica, $4: at most. Chats with unanswered
-- updates that no live replica is answering (or that $3 held before it
-- restarted).
SELECT DISTINCT u.chat_key FROM inbound_updates u
LEFT JOIN chat_leases l ON l.platform = u.platform AND l.chat_key = u.chat_key
WHERE u.platform = $1 AND u.done_at IS NULL
  AND (l.replica IS NULL OR l.expires_at < $2 OR l.replica = $3)
LIMIT $4
