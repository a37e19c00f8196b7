INSERT INTO reviews (message_id, conversation_id, operator_id, decision, correction, created_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (message_id) DO UPDATE SET
    operator_id = excluded.operator_id,
    decision = excluded.decision,
    correction = excluded.correction,
    created_at = excluded.created_at
