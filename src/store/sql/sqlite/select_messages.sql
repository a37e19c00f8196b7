-- $1: a JSON array of conversation ids.
SELECT id, conversation_id, role, content, created_at, model_version, latency_ms,
       prompt_tokens, completion_tokens, moderation_verdict, moderation_scores,
       reply_kind, passages, retrieval_confidence
FROM messages
WHERE conversation_id IN (SELECT value FROM json_each($1))
ORDER BY conversation_id, seq
