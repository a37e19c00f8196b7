INSERT INTO conversations (id, platform, channel, user_key, started_at, topic, style)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT DO NOTHING
