-- Facts about the store itself. `user_key_check` is a keyed hash of a fixed
-- text under the user-key secret that `serve` records at its first start:
-- `chatforge logs forget|show` compare it to refuse a wrong secret instead
-- of finding "0 records" for every user.
CREATE TABLE store_settings (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- What was done to the logs, and when: erasures and purges (counts only,
-- never whose data), and operators' actions. No foreign key: the audit
-- outlives the conversations it names.
CREATE TABLE audit_events (
    id              TEXT PRIMARY KEY NOT NULL,
    created_at      INTEGER NOT NULL,
    -- Who acted: an operator id, or the command (`logs forget`, `serve`).
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    conversation_id TEXT,
    -- JSON: counts and settings of the action.
    detail          TEXT
);
CREATE INDEX audit_events_created_at ON audit_events (created_at);
CREATE INDEX audit_events_conversation ON audit_events (conversation_id);

-- Retention finds idle conversations by their newest row.
CREATE INDEX feedback_conversation_created ON feedback (conversation_id, created_at);
