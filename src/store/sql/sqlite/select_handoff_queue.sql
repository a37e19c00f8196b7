SELECT id, platform, channel, user_key, started_at, ended_at, handoff_state, handoff_at,
       topic, style, claimed_by
FROM conversations
WHERE handoff_state IN ('requested', 'active')
ORDER BY handoff_at, id
LIMIT $1
