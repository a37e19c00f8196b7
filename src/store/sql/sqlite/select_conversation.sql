SELECT id, platform, channel, user_key, started_at, ended_at, handoff_state, handoff_at,
       topic, style
FROM conversations
WHERE id = $1
