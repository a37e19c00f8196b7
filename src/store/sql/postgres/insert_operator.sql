INSERT INTO operators (id, name, password_hash, must_change, created_at, password_set_at,
                       failed_logins, locked_until)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT DO NOTHING
