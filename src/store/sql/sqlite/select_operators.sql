SELECT id, name, password_hash, must_change, created_at, password_set_at, failed_logins,
       locked_until
FROM operators
WHERE $1 IS NULL OR name = $1
ORDER BY name
