DELETE FROM feedback WHERE conversation_id IN (SELECT value FROM json_each($1)) OR user_key = $2
