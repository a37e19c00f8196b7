-- $1: platform, $2: chat. The chat's oldest unanswered update.
SELECT update_id, chat_key, payload, sent FROM inbound_updates
WHERE platform = $1 AND chat_key = $2 AND done_at IS NULL
ORDER BY update_id
LIMIT 1
