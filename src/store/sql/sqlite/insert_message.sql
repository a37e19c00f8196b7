INSERT INTO messages (id, conversation_id, role, content, created_at, model_version,
                      latency_ms, prompt_tokens, completion_tokens,
                      moderation_verdict, moderation_scores,
                      reply_kind, passages, retrieval_confidence, operator_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT DO NOTHING
