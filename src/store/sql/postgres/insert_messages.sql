-- Many messages in one statement: one array per column, rows inserted in
-- array order (so `seq` follows the order they were logged in).
INSERT INTO messages (id, conversation_id, role, content, created_at, model_version,
                      latency_ms, prompt_tokens, completion_tokens,
                      moderation_verdict, moderation_scores)
SELECT id, conversation_id, role, content, created_at, model_version,
       latency_ms, prompt_tokens, completion_tokens,
       moderation_verdict, CAST(moderation_scores AS JSONB)
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
            $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::text[], $11::text[])
     WITH ORDINALITY AS t(id, conversation_id, role, content, created_at, model_version,
                          latency_ms, prompt_tokens, completion_tokens,
                          moderation_verdict, moderation_scores, n)
ORDER BY n
ON CONFLICT DO NOTHING
