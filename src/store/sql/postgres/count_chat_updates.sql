-- $1: platform, $2: chat. The chat's kept updates, answered or not.
SELECT count(*) FROM inbound_updates WHERE platform = $1 AND chat_key = $2
