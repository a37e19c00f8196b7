DELETE FROM messages WHERE conversation_id = ANY($1)
