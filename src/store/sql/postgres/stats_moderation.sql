SELECT to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, c.platform,
       COUNT(*) AS events,
       COUNT(*) FILTER (WHERE e.verdict <> 'allow') AS actions
FROM moderation_events e JOIN conversations c ON c.id = e.conversation_id
GROUP BY 1, 2
