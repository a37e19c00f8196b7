DELETE FROM moderation_events WHERE conversation_id IN (SELECT value FROM json_each($1))
