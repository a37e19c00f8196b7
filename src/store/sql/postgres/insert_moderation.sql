INSERT INTO moderation_events (id, conversation_id, message_id, created_at, category,
                               score, verdict, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT DO NOTHING
