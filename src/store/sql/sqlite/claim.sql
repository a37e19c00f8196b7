-- $1: conversation, $2: operator, $3: now (ms).
UPDATE conversations
SET handoff_state = 'active', claimed_by = $2, claimed_at = $3
WHERE id = $1 AND handoff_state = 'requested' AND claimed_by IS NULL
