-- How each reply was grounded in the knowledge base (see migrations/sqlite).
ALTER TABLE messages ADD COLUMN reply_kind TEXT
    CHECK (reply_kind IN ('generated', 'extracted', 'abstained'));
ALTER TABLE messages ADD COLUMN passages JSONB;
ALTER TABLE messages ADD COLUMN retrieval_confidence DOUBLE PRECISION;
