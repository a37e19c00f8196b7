DELETE FROM moderation_events WHERE conversation_id = ANY($1)
