-- Objects in a bucket are packed: many to one key, as restic packs its blobs, so that a push
-- of 100,000 chunks is a few dozen PUTs rather than 100,000. Each index row says which pack
-- holds its object and where; rows indexed before packs (pack NULL) keep a key of their own.
ALTER TABLE object_index ADD COLUMN pack bytea, ADD COLUMN off bigint NOT NULL DEFAULT 0;

-- gc asks which packs any indexed object is still in.
CREATE INDEX object_index_by_pack ON object_index (session, pack) WHERE pack IS NOT NULL;
