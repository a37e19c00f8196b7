SELECT id, conversation_id, message_id, rating, comment, user_key, created_at
FROM feedback
WHERE conversation_id = $1
ORDER BY id
