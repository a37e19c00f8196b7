-- Operators: the people who answer handed-off conversations in the console.
-- The password is stored only as an argon2id hash (PHC string); a new or
-- reset account has a one-time password that must be changed at the first
-- login. Failed logins count up to a lockout.
CREATE TABLE operators (
    id              TEXT COLLATE "C" PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    must_change     BOOLEAN NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    password_set_at TIMESTAMPTZ NOT NULL,
    failed_logins   BIGINT NOT NULL DEFAULT 0,
    locked_until    TIMESTAMPTZ
);
