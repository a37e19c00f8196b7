-- Facts about the store itself. `user_key_check` is a keyed hash of a fixed
-- text under the user-key secret that `serve` records at its first start:
-- `chatforge logs forget|show` compare it to refuse a wrong secret instead
-- of finding "0 records" for every user.
CREATE TABLE store_settings (
    name  TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);

-- What was done to the logs, and when: erasures and purges (counts only,
-- never whose data), and operators' actions. No foreign key: the audit
-- outlives the conversations it names.
CREATE TABLE audit_events (
    id              TEXT COLLATE "C" PRIMARY KEY,
    created_at      TIMESTAMPTZ NOT NULL,
    -- Who acted: an operator id, or the command (`logs forget`, `serve`).
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    conversation_id TEXT COLLATE "C",
    -- Counts and settings of the action.
    detail          JSONB
);
CREATE INDEX audit_events_created_at ON audit_events (created_at);
CREATE INDEX audit_events_conversation ON audit_events (conversation_id);

-- Retention finds idle conversations by their newest row.
CREATE INDEX feedback_conversation_created ON feedback (conversation_id, created_at);
