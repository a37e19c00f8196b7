-- The same schema as migrations/postgres for the embedded SQLite default.
-- Times are INTEGER milliseconds since the Unix epoch (UTC), which index and
-- compare as numbers; JSON is TEXT. Ids are time-ordered UUIDv7 text made by
-- the writer, so a replayed record is a no-op (INSERT … ON CONFLICT DO NOTHING).
-- The applied schema version is sqlx's _sqlx_migrations table.

CREATE TABLE conversations (
    id            TEXT PRIMARY KEY NOT NULL,
    platform      TEXT NOT NULL,
    channel       TEXT NOT NULL,
    -- HMAC-SHA256 of the platform user id (hex); never the raw id.
    user_key      TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    handoff_state TEXT NOT NULL DEFAULT 'none'
        CHECK (handoff_state IN ('none', 'requested', 'active', 'resolved')),
    handoff_at    INTEGER,
    topic         TEXT,
    style         TEXT
);
CREATE INDEX conversations_started_at ON conversations (started_at);
CREATE INDEX conversations_platform_started_at ON conversations (platform, started_at);
CREATE INDEX conversations_user_key ON conversations (user_key);

CREATE TABLE messages (
    -- Write order: the order a conversation's turns were logged in.
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  TEXT NOT NULL UNIQUE,
    conversation_id     TEXT NOT NULL REFERENCES conversations (id),
    role                TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content             TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    model_version       TEXT,
    latency_ms          INTEGER,
    prompt_tokens       INTEGER,
    completion_tokens   INTEGER,
    moderation_verdict  TEXT CHECK (moderation_verdict IN ('allow', 'flag', 'block')),
    -- {"category": score, …} from the moderation classifier.
    moderation_scores   TEXT
);
CREATE INDEX messages_conversation_seq ON messages (conversation_id, seq);
CREATE INDEX messages_created_at ON messages (created_at);
CREATE INDEX messages_flagged ON messages (conversation_id)
    WHERE moderation_verdict IN ('flag', 'block');

CREATE TABLE moderation_events (
    id              TEXT PRIMARY KEY NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    message_id      TEXT,
    created_at      INTEGER NOT NULL,
    category        TEXT NOT NULL,
    score           REAL NOT NULL,
    verdict         TEXT NOT NULL CHECK (verdict IN ('allow', 'flag', 'block')),
    detail          TEXT
);
CREATE INDEX moderation_events_conversation ON moderation_events (conversation_id);
CREATE INDEX moderation_events_created_at ON moderation_events (created_at);

CREATE TABLE feedback (
    id              TEXT PRIMARY KEY NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    message_id      TEXT,
    -- 1 (bad) … 5 (good); a thumbs-down is 1, a thumbs-up 5.
    rating          INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment         TEXT,
    -- Who rated: the same keyed hash as conversations.user_key.
    user_key        TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX feedback_conversation ON feedback (conversation_id);
CREATE INDEX feedback_created_at ON feedback (created_at);
