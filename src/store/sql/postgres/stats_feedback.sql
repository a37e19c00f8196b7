SELECT to_char(f.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, c.platform,
       COUNT(*) AS feedback,
       COALESCE(SUM(f.rating), 0)::bigint AS rating_sum,
       COUNT(*) FILTER (WHERE f.rating >= 4) AS positive
FROM feedback f JOIN conversations c ON c.id = f.conversation_id
GROUP BY 1, 2
