-- $1: platform, $2: channel. The chat's conversation that waits for or is
-- with a human, if any (what a restarted serve must not answer as the bot).
SELECT id, platform, channel, user_key, started_at, ended_at, handoff_state, handoff_at,
       topic, style, claimed_by
FROM conversations
WHERE handoff_state IN ('requested', 'active') AND ended_at IS NULL
  AND platform = $1 AND channel = $2
ORDER BY started_at DESC, id DESC
LIMIT 1
