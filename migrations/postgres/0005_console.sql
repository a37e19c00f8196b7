-- The operator console. Operators' replies are messages with role
-- 'operator' and the operator's id (no foreign key: the message outlives
-- the account).
ALTER TABLE messages DROP CONSTRAINT messages_role_check;
ALTER TABLE messages ADD CONSTRAINT messages_role_check
    CHECK (role IN ('system', 'user', 'assistant', 'operator'));
ALTER TABLE messages ADD COLUMN operator_id TEXT;

-- Which operator holds a handed-off conversation: set only by a claim that
-- finds it unclaimed, so two operators cannot both hold it.
ALTER TABLE conversations ADD COLUMN claimed_by TEXT;
ALTER TABLE conversations ADD COLUMN claimed_at TIMESTAMPTZ;
CREATE INDEX conversations_handoff ON conversations (handoff_state, handoff_at);

-- An operator's review of a bot reply: approved, rejected (never a training
-- target) or corrected (the correction is the training target instead).
-- One review per reply; a later review replaces it.
CREATE TABLE reviews (
    message_id      TEXT COLLATE "C" PRIMARY KEY,
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    operator_id     TEXT NOT NULL,
    decision        TEXT NOT NULL CHECK (decision IN ('approved', 'rejected', 'corrected')),
    correction      TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX reviews_conversation ON reviews (conversation_id);
