-- How each reply was grounded in the knowledge base (none without one):
-- reply_kind 'generated' (the model's words, every fact checked against the
-- passages), 'extracted' (the model stated something the passages do not:
-- replaced by their best sentences) or 'abstained' (retrieval not confident:
-- the handoff offer); passages: JSON array of the passage ids it rested on;
-- retrieval_confidence: the calibrated confidence of the first passage.
ALTER TABLE messages ADD COLUMN reply_kind TEXT
    CHECK (reply_kind IN ('generated', 'extracted', 'abstained'));
ALTER TABLE messages ADD COLUMN passages TEXT;
ALTER TABLE messages ADD COLUMN retrieval_confidence REAL;
