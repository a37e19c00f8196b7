-- One page of the export: conversations passing the filters, in id order
-- after $1. $2/$3: start time range [since, until) in ms; $4: JSON array of
-- platforms (empty: all); $5: exclude handoffs; $6: exclude flagged; $7:
-- minimum mean rating (conversations without feedback fail it); $8: minimum
-- assistant turns.
SELECT c.id, c.platform, c.channel, c.user_key, c.started_at, c.ended_at,
       c.handoff_state, c.handoff_at, c.topic, c.style, c.claimed_by
FROM conversations c
WHERE ($1 IS NULL OR c.id > $1)
  AND ($2 IS NULL OR c.started_at >= $2)
  AND ($3 IS NULL OR c.started_at < $3)
  AND (json_array_length($4) = 0 OR c.platform IN (SELECT value FROM json_each($4)))
  AND (NOT $5 OR c.handoff_state = 'none')
  AND (NOT $6 OR (
        NOT EXISTS (SELECT 1 FROM messages m
                    WHERE m.conversation_id = c.id
                      AND m.moderation_verdict IN ('flag', 'block'))
        AND NOT EXISTS (SELECT 1 FROM moderation_events e
                        WHERE e.conversation_id = c.id
                          AND e.verdict IN ('flag', 'block'))))
  AND ($7 IS NULL OR (SELECT AVG(f.rating) FROM feedback f
                      WHERE f.conversation_id = c.id) >= $7)
  AND ($8 <= 0 OR (SELECT COUNT(*) FROM messages m
                   WHERE m.conversation_id = c.id
                     AND m.role = 'assistant') >= $8)
ORDER BY c.id
LIMIT $9
