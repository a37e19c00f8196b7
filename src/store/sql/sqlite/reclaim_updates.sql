-- $1: platform, $2: replica, $3: stale before (ms), $4: now (ms), $5: also
-- the replica's own (at start-up), $6: at most. Unanswered updates whose
-- claim went stale (its replica died or restarted) move to this replica.
UPDATE inbound_updates SET claimed_by = $2, claimed_at = $4
WHERE rowid IN (SELECT rowid FROM inbound_updates
                WHERE platform = $1 AND done_at IS NULL
                  AND (claimed_at < $3 OR ($5 AND claimed_by = $2))
                ORDER BY update_id LIMIT $6)
RETURNING update_id, chat_key, payload
