-- Updates pushed to a webhook (Telegram), kept from the moment they are
-- acknowledged until they are answered, so that a replica that dies
-- mid-reply loses nothing. `payload` is the update as received, its texts
-- redacted and its sender's names removed, and is cleared once answered;
-- the answered row stays a day so a resent update is recognised.
CREATE TABLE inbound_updates (
    platform    TEXT NOT NULL,
    update_id   INTEGER NOT NULL,
    chat_key    TEXT NOT NULL,
    payload     TEXT,
    received_at INTEGER NOT NULL,
    -- The replica that acknowledged it (any replica may answer it).
    received_by TEXT NOT NULL,
    done_at     INTEGER,
    PRIMARY KEY (platform, update_id)
);
CREATE INDEX inbound_updates_waiting ON inbound_updates (platform, chat_key, update_id)
    WHERE done_at IS NULL;

-- Which replica answers a chat's updates now: one at a time, so a chat's
-- replies keep their order across replicas. Renewed while held; a lease
-- past `expires_at` (its replica died) may be taken by another.
CREATE TABLE chat_leases (
    platform   TEXT NOT NULL,
    chat_key   TEXT NOT NULL,
    replica    TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (platform, chat_key)
);

-- A replica answering a chat reads the chat's open conversation (its
-- recent turns, its handoff) from here: in-memory sessions are a cache.
CREATE INDEX conversations_chat ON conversations (platform, channel, started_at);
