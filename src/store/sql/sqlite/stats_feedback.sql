SELECT strftime('%Y-%m-%d', f.created_at / 1000, 'unixepoch') AS day, c.platform,
       COUNT(*) AS feedback,
       COALESCE(SUM(f.rating), 0) AS rating_sum,
       SUM(f.rating >= 4) AS positive
FROM feedback f JOIN conversations c ON c.id = f.conversation_id
GROUP BY 1, 2
