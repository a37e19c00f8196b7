SELECT id FROM conversations WHERE platform = $1 AND user_key = $2 ORDER BY id
