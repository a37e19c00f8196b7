-- The ids of the messages already sent in answer to an update, noted the
-- moment each is sent (comma-separated): a replica answering the update
-- again, because the one answering it died before marking it answered,
-- edits those messages instead of sending the reply twice.
ALTER TABLE inbound_updates ADD COLUMN sent TEXT;
