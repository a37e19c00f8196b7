SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, platform,
       COUNT(*) AS conversations,
       COUNT(*) FILTER (WHERE handoff_state <> 'none') AS handoffs
FROM conversations
GROUP BY 1, 2
