-- $1: a JSON array of conversation ids. With each message, its review (if
-- an operator reviewed it).
SELECT m.id, m.conversation_id, m.role, m.content, m.created_at, m.model_version,
       m.latency_ms, m.prompt_tokens, m.completion_tokens, m.moderation_verdict,
       m.moderation_scores, m.reply_kind, m.passages, m.retrieval_confidence, m.operator_id,
       r.decision AS review_decision, r.correction AS review_correction,
       r.operator_id AS review_operator, r.created_at AS review_at
FROM messages m LEFT JOIN reviews r ON r.message_id = m.id
WHERE m.conversation_id IN (SELECT value FROM json_each($1))
ORDER BY m.conversation_id, m.seq
