-- Conversations with no row at or after $1 (idle since before it), whose
-- id sorts after $2, in id order, at most $3.
SELECT c.id
FROM conversations c
WHERE c.started_at < $1
  AND (c.ended_at IS NULL OR c.ended_at < $1)
  AND (c.handoff_at IS NULL OR c.handoff_at < $1)
  AND ($2::text IS NULL OR c.id > $2)
  AND NOT EXISTS (SELECT 1 FROM messages m
                  WHERE m.conversation_id = c.id AND m.created_at >= $1)
  AND NOT EXISTS (SELECT 1 FROM feedback f
                  WHERE f.conversation_id = c.id AND f.created_at >= $1)
  AND NOT EXISTS (SELECT 1 FROM moderation_events e
                  WHERE e.conversation_id = c.id AND e.created_at >= $1)
ORDER BY c.id
LIMIT $3
