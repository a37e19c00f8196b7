-- The operator console. Operators' replies are messages with role
-- 'operator' and the operator's id; SQLite cannot change a CHECK in place,
-- so `messages` is rebuilt with the same rows, order (seq) and indexes.
CREATE TABLE messages_new (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    id                   TEXT NOT NULL UNIQUE,
    conversation_id      TEXT NOT NULL REFERENCES conversations (id),
    role                 TEXT NOT NULL
        CHECK (role IN ('system', 'user', 'assistant', 'operator')),
    content              TEXT NOT NULL,
    created_at           INTEGER NOT NULL,
    model_version        TEXT,
    latency_ms           INTEGER,
    prompt_tokens        INTEGER,
    completion_tokens    INTEGER,
    moderation_verdict   TEXT CHECK (moderation_verdict IN ('allow', 'flag', 'block')),
    moderation_scores    TEXT,
    reply_kind           TEXT CHECK (reply_kind IN ('generated', 'extracted', 'abstained')),
    passages             TEXT,
    retrieval_confidence REAL,
    -- Who wrote an 'operator' message (operators.id; no foreign key: the
    -- message outlives the account).
    operator_id          TEXT
);
INSERT INTO messages_new (seq, id, conversation_id, role, content, created_at, model_version,
                          latency_ms, prompt_tokens, completion_tokens, moderation_verdict,
                          moderation_scores, reply_kind, passages, retrieval_confidence)
SELECT seq, id, conversation_id, role, content, created_at, model_version, latency_ms,
       prompt_tokens, completion_tokens, moderation_verdict, moderation_scores, reply_kind,
       passages, retrieval_confidence
FROM messages;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE INDEX messages_conversation_seq ON messages (conversation_id, seq);
CREATE INDEX messages_created_at ON messages (created_at);
CREATE INDEX messages_flagged ON messages (conversation_id)
    WHERE moderation_verdict IN ('flag', 'block');

-- Which operator holds a handed-off conversation: set only by a claim that
-- finds it unclaimed, so two operators cannot both hold it.
ALTER TABLE conversations ADD COLUMN claimed_by TEXT;
ALTER TABLE conversations ADD COLUMN claimed_at INTEGER;
CREATE INDEX conversations_handoff ON conversations (handoff_state, handoff_at);

-- An operator's review of a bot reply: approved, rejected (never a training
-- target) or corrected (the correction is the training target instead).
-- One review per reply; a later review replaces it.
CREATE TABLE reviews (
    message_id      TEXT PRIMARY KEY NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    operator_id     TEXT NOT NULL,
    decision        TEXT NOT NULL CHECK (decision IN ('approved', 'rejected', 'corrected')),
    correction      TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX reviews_conversation ON reviews (conversation_id);
