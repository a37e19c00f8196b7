-- Updates pushed to a webhook (Telegram), kept from the moment they are
-- acknowledged until they are answered, so that a replica that dies
-- mid-reply loses nothing: another one (or the same after a restart)
-- takes what it left. `payload` is the update as received, its texts
-- redacted and its sender's names removed, and is cleared once answered;
-- the answered row stays a day so a resent update is recognised.
CREATE TABLE inbound_updates (
    platform    TEXT NOT NULL,
    update_id   INTEGER NOT NULL,
    chat_key    TEXT NOT NULL,
    payload     TEXT,
    received_at INTEGER NOT NULL,
    claimed_by  TEXT NOT NULL,
    claimed_at  INTEGER NOT NULL,
    done_at     INTEGER,
    PRIMARY KEY (platform, update_id)
);
CREATE INDEX inbound_updates_pending ON inbound_updates (platform, claimed_at)
    WHERE done_at IS NULL;
