SELECT EXISTS (SELECT 1 FROM sqlite_master
               WHERE type = 'table' AND name = '_sqlx_migrations') AS present
