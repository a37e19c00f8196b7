-- $1: conversation, $2: now (ms).
UPDATE conversations
SET handoff_state = 'resolved', handoff_at = $2, claimed_by = NULL, claimed_at = NULL
WHERE id = $1 AND handoff_state IN ('requested', 'active')
