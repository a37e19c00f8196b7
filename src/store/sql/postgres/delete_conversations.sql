DELETE FROM conversations WHERE id = ANY($1)
