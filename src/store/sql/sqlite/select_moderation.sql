SELECT id, conversation_id, message_id, created_at, category, score, verdict, detail
FROM moderation_events
WHERE conversation_id = $1
ORDER BY id
