SELECT id, created_at, actor, action, conversation_id, detail::text AS detail
FROM audit_events
ORDER BY id DESC
LIMIT $1
