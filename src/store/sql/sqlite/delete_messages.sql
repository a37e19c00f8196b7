DELETE FROM messages WHERE conversation_id IN (SELECT value FROM json_each($1))
