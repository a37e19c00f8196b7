INSERT INTO audit_events (id, created_at, actor, action, conversation_id, detail)
VALUES ($1, $2, $3, $4, $5, $6)
