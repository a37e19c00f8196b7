-- $1: platform, $2: channel. The chat's newest conversation not ended.
SELECT id FROM conversations
WHERE platform = $1 AND channel = $2 AND ended_at IS NULL
ORDER BY started_at DESC
LIMIT 1
