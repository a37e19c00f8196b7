UPDATE operators
SET password_hash = $2, must_change = $3, password_set_at = $4, failed_logins = $5,
    locked_until = $6
WHERE id = $1
