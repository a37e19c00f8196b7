-- $1: platform, $2: chat. The chat's kept updates, answered or not.
DELETE FROM inbound_updates WHERE platform = $1 AND chat_key = $2
