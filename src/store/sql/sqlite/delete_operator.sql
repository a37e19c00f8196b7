DELETE FROM operators WHERE name = $1
