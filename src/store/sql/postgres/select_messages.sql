SELECT id, conversation_id, role, content, created_at, model_version, latency_ms,
       prompt_tokens, completion_tokens, moderation_verdict,
       moderation_scores::text AS moderation_scores,
       reply_kind, passages::text AS passages, retrieval_confidence
FROM messages
WHERE conversation_id = ANY($1)
ORDER BY conversation_id, seq
