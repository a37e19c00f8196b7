SELECT strftime('%Y-%m-%d', e.created_at / 1000, 'unixepoch') AS day, c.platform,
       COUNT(*) AS events,
       SUM(e.verdict <> 'allow') AS actions
FROM moderation_events e JOIN conversations c ON c.id = e.conversation_id
GROUP BY 1, 2
