DELETE FROM reviews WHERE conversation_id IN (SELECT value FROM json_each($1))
