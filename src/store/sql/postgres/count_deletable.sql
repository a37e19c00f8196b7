-- $1: the conversation ids; $2: a user key whose feedback elsewhere goes too.
SELECT (SELECT count(*) FROM conversations WHERE id = ANY($1)) AS conversations,
       (SELECT count(*) FROM messages WHERE conversation_id = ANY($1)) AS messages,
       (SELECT count(*) FROM feedback
        WHERE conversation_id = ANY($1) OR user_key = $2) AS feedback,
       (SELECT count(*) FROM moderation_events WHERE conversation_id = ANY($1)) AS moderation_events
