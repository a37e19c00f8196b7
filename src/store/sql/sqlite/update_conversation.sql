-- $2: ended, $3: when (ms). Replaying an update changes nothing: the first
-- end time and the time of the last handoff change are kept.
UPDATE conversations SET
    ended_at = CASE WHEN $2 THEN COALESCE(ended_at, $3) ELSE ended_at END,
    handoff_at = CASE WHEN $4 IS NULL OR $4 = handoff_state THEN handoff_at ELSE $3 END,
    handoff_state = COALESCE($4, handoff_state),
    topic = COALESCE($5, topic),
    style = COALESCE($6, style)
WHERE id = $1
