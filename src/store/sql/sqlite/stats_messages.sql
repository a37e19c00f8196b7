SELECT strftime('%Y-%m-%d', m.created_at / 1000, 'unixepoch') AS day, c.platform,
       COUNT(*) AS messages,
       SUM(m.role = 'user') AS user_messages,
       SUM(m.role = 'assistant') AS assistant_messages,
       SUM(COALESCE(m.moderation_verdict IN ('flag', 'block'), 0)) AS flagged,
       COALESCE(SUM(m.latency_ms), 0) AS latency_sum,
       COUNT(m.latency_ms) AS latency_count,
       SUM(COALESCE(m.reply_kind = 'generated', 0)) AS generated,
       SUM(COALESCE(m.reply_kind = 'extracted', 0)) AS extracted,
       SUM(COALESCE(m.reply_kind = 'abstained', 0)) AS abstained,
       SUM(m.role = 'operator') AS operator_messages,
       COUNT(r.decision) AS reviewed,
       SUM(COALESCE(r.decision = 'corrected', 0)) AS corrected
FROM messages m JOIN conversations c ON c.id = m.conversation_id
     LEFT JOIN reviews r ON r.message_id = m.id
GROUP BY 1, 2
