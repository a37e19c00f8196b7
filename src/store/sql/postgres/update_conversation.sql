-- $2: ended, $3: when. Replaying an update changes nothing: the first end
-- time and the time of the last handoff change are kept.
-- $4: the handoff state; an operator's claim is made by claim.sql.
UPDATE conversations SET
    ended_at = CASE WHEN $2 THEN COALESCE(ended_at, $3) ELSE ended_at END,
    handoff_at = CASE WHEN $4::text IS NULL OR $4::text = handoff_state THEN handoff_at ELSE $3 END,
    handoff_state = COALESCE($4::text, handoff_state),
    -- Waiting again, or back with the bot: no operator holds it.
    claimed_by = CASE WHEN $4::text IN ('requested', 'resolved', 'none') THEN NULL ELSE claimed_by END,
    topic = COALESCE($5, topic),
    style = COALESCE($6, style)
WHERE id = $1
