-- The conversation store: one row per conversation, message, moderation
-- event and feedback. Every row has a time-ordered UUIDv7 text id made by the
-- writer, so a replayed record is a no-op (INSERT … ON CONFLICT DO NOTHING).
-- Ids compare bytewise (COLLATE "C") for keyset pagination.
-- The applied schema version is sqlx's _sqlx_migrations table.

CREATE TABLE conversations (
    id            TEXT COLLATE "C" PRIMARY KEY,
    platform      TEXT NOT NULL,
    channel       TEXT NOT NULL,
    -- HMAC-SHA256 of the platform user id (hex); never the raw id.
    user_key      TEXT NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    ended_at      TIMESTAMPTZ,
    handoff_state TEXT NOT NULL DEFAULT 'none'
        CHECK (handoff_state IN ('none', 'requested', 'active', 'resolved')),
    handoff_at    TIMESTAMPTZ,
    topic         TEXT,
    style         TEXT
);
CREATE INDEX conversations_started_at ON conversations (started_at);
CREATE INDEX conversations_platform_started_at ON conversations (platform, started_at);
CREATE INDEX conversations_user_key ON conversations (user_key);

CREATE TABLE messages (
    -- Write order: the order a conversation's turns were logged in.
    seq                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                  TEXT COLLATE "C" NOT NULL UNIQUE,
    conversation_id     TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    role                TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content             TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    model_version       TEXT,
    latency_ms          BIGINT,
    prompt_tokens       BIGINT,
    completion_tokens   BIGINT,
    moderation_verdict  TEXT CHECK (moderation_verdict IN ('allow', 'flag', 'block')),
    -- {"category": score, …} from the moderation classifier.
    moderation_scores   JSONB
);
CREATE INDEX messages_conversation_seq ON messages (conversation_id, seq);
CREATE INDEX messages_created_at ON messages (created_at);
CREATE INDEX messages_flagged ON messages (conversation_id)
    WHERE moderation_verdict IN ('flag', 'block');

CREATE TABLE moderation_events (
    id              TEXT COLLATE "C" PRIMARY KEY,
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    message_id      TEXT COLLATE "C",
    created_at      TIMESTAMPTZ NOT NULL,
    category        TEXT NOT NULL,
    score           DOUBLE PRECISION NOT NULL,
    verdict         TEXT NOT NULL CHECK (verdict IN ('allow', 'flag', 'block')),
    detail          TEXT
);
CREATE INDEX moderation_events_conversation ON moderation_events (conversation_id);
CREATE INDEX moderation_events_created_at ON moderation_events (created_at);

CREATE TABLE feedback (
    id              TEXT COLLATE "C" PRIMARY KEY,
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    message_id      TEXT COLLATE "C",
    -- 1 (bad) … 5 (good); a thumbs-down is 1, a thumbs-up 5.
    rating          SMALLINT NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment         TEXT,
    -- Who rated: the same keyed hash as conversations.user_key.
    user_key        TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX feedback_conversation ON feedback (conversation_id);
CREATE INDEX feedback_created_at ON feedback (created_at);
