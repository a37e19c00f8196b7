INSERT INTO store_settings (name, value) VALUES ($1, $2)
ON CONFLICT DO NOTHING
