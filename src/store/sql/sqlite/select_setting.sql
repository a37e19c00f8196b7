SELECT value FROM store_settings WHERE name = $1
