-- Many messages in one statement: one array per column, rows inserted in
-- array order (so `seq` follows the order they were logged in).
INSERT INTO messages (id, conversation_id, role, content, created_at, model_version,
                      latency_ms, prompt_tokens, completion_tokens,
                      moderation_verdict, moderation_scores,
                      reply_kind, passages, retrieval_confidence, operator_id)
SELECT id, conversation_id, role, content, created_at, model_version,
       latency_ms, prompt_tokens, completion_tokens,
       moderation_verdict, CAST(moderation_scores AS JSONB),
       reply_kind, CAST(passages AS JSONB), retrieval_confidence, operator_id
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
            $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::text[], $11::text[],
            $12::text[], $13::text[], $14::float8[], $15::text[])
     WITH ORDINALITY AS t(id, conversation_id, role, content, created_at, model_version,
                          latency_ms, prompt_tokens, completion_tokens,
                          moderation_verdict, moderation_scores,
                          reply_kind, passages, retrieval_confidence, operator_id, n)
ORDER BY n
ON CONFLICT DO NOTHING
