INSERT INTO feedback (id, conversation_id, message_id, rating, comment, user_key, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT DO NOTHING
