-- A bot reply's conversation (reviews are of bot replies only).
SELECT conversation_id FROM messages WHERE id = $1 AND role = 'assistant'
