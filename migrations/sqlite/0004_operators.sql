-- Operators: the people who answer handed-off conversations in the console.
-- The password is stored only as an argon2id hash (PHC string); a new or
-- reset account has a one-time password that must be changed at the first
-- login. Failed logins count up to a lockout.
CREATE TABLE operators (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    must_change     INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    password_set_at INTEGER NOT NULL,
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    locked_until    INTEGER
);
