-- $1: answered before.
DELETE FROM inbound_updates WHERE done_at IS NOT NULL AND done_at < $1
