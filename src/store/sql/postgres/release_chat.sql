-- $1: platform, $2: chat, $3: replica.
DELETE FROM chat_leases WHERE platform = $1 AND chat_key = $2 AND replica = $3
