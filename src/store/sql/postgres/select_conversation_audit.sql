SELECT id, created_at, actor, action, conversation_id, detail::text AS detail
FROM audit_events
WHERE conversation_id = $1
ORDER BY id
