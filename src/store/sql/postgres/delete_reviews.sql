DELETE FROM reviews WHERE conversation_id = ANY($1)
