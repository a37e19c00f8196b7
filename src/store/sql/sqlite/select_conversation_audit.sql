SELECT id, created_at, actor, action, conversation_id, detail
FROM audit_events
WHERE conversation_id = $1
ORDER BY id
