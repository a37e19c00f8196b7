-- $1: sample one in $1 of the replies with no reason; $2: limit.
WITH candidates AS (
    SELECT m.*, c.platform,
           CASE WHEN m.moderation_verdict = 'block' THEN 'blocked'
                WHEN EXISTS (SELECT 1 FROM feedback f
                             WHERE f.message_id = m.id AND f.rating <= 2) THEN 'thumbs_down'
                WHEN m.reply_kind = 'extracted' THEN 'guard_replaced'
                ELSE 'sample' END AS reason
    FROM messages m JOIN conversations c ON c.id = m.conversation_id
    WHERE m.role = 'assistant'
      AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.message_id = m.id)
)
SELECT id, conversation_id, role, content, created_at, model_version, latency_ms,
       prompt_tokens, completion_tokens, moderation_verdict, moderation_scores,
       reply_kind, passages, retrieval_confidence, operator_id,
       NULL AS review_decision, NULL AS review_correction, NULL AS review_operator,
       NULL AS review_at, platform, reason
FROM candidates
WHERE reason <> 'sample' OR seq % $1 = 0
ORDER BY reason = 'sample', seq DESC
LIMIT $2
