SELECT strftime('%Y-%m-%d', started_at / 1000, 'unixepoch') AS day, platform,
       COUNT(*) AS conversations,
       SUM(handoff_state <> 'none') AS handoffs
FROM conversations
GROUP BY 1, 2
