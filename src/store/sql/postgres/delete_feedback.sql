DELETE FROM feedback WHERE conversation_id = ANY($1) OR user_key = $2
