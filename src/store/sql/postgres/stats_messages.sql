SELECT to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, c.platform,
       COUNT(*) AS messages,
       COUNT(*) FILTER (WHERE m.role = 'user') AS user_messages,
       COUNT(*) FILTER (WHERE m.role = 'assistant') AS assistant_messages,
       COUNT(*) FILTER (WHERE m.moderation_verdict IN ('flag', 'block')) AS flagged,
       COALESCE(SUM(m.latency_ms), 0)::bigint AS latency_sum,
       COUNT(m.latency_ms) AS latency_count,
       COUNT(*) FILTER (WHERE m.reply_kind = 'generated') AS generated,
       COUNT(*) FILTER (WHERE m.reply_kind = 'extracted') AS extracted,
       COUNT(*) FILTER (WHERE m.reply_kind = 'abstained') AS abstained,
       COUNT(*) FILTER (WHERE m.role = 'operator') AS operator_messages,
       COUNT(r.decision) AS reviewed,
       COUNT(*) FILTER (WHERE r.decision = 'corrected') AS corrected
FROM messages m JOIN conversations c ON c.id = m.conversation_id
     LEFT JOIN reviews r ON r.message_id = m.id
GROUP BY 1, 2
