-- The index of objects kept outside the coordination state (phs serve --objects s3://...):
-- each stored id's size and first bytes, and the upload log gc's grace period reads.
CREATE TABLE object_index (
    session text NOT NULL,
    oid bytea NOT NULL,
    size bigint NOT NULL,
    head bytea NOT NULL,
    PRIMARY KEY (session, oid)
);

CREATE TABLE object_uploads (
    session text NOT NULL,
    seq bigserial,
    stamp bigint NOT NULL,
    oids bytea[] NOT NULL,
    PRIMARY KEY (session, seq)
);

CREATE INDEX object_uploads_by_time ON object_uploads (session, stamp);
