-- $1: platform, $2: replica, $3: stale before, $4: now, $5: also the
-- replica's own (at start-up), $6: at most. Unanswered updates whose
-- claim went stale (its replica died or restarted) move to this replica;
-- SKIP LOCKED keeps two replicas sweeping at once from taking the same.
UPDATE inbound_updates u SET claimed_by = $2, claimed_at = $4
FROM (SELECT platform, update_id FROM inbound_updates
      WHERE platform = $1 AND done_at IS NULL
        AND (claimed_at < $3 OR ($5 AND claimed_by = $2))
      ORDER BY update_id LIMIT $6
      FOR UPDATE SKIP LOCKED) t
WHERE u.platform = t.platform AND u.update_id = t.update_id
RETURNING u.update_id, u.chat_key, u.payload
