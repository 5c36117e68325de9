-- The coordination state of several coordinators sharing one database (backends/postgres.py).
-- Tables are created in the first schema of the connection's search_path.

-- The admin's token id (one row at most).
CREATE TABLE admin (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    token_id text NOT NULL
);

-- Hashed tokens of the admin, owners and members (never a token in clear).
CREATE TABLE tokens (
    token_id text PRIMARY KEY,
    digest text NOT NULL,
    role text NOT NULL,
    session text,
    member text NOT NULL
);

-- Sessions in creation order (seq), their owner's token id and settings.
CREATE TABLE sessions (
    name text PRIMARY KEY,
    seq bigserial UNIQUE,
    created bigint NOT NULL,
    owner_token text NOT NULL,
    settings jsonb NOT NULL DEFAULT '{}'
);

-- Members in the order they were added (seq).
CREATE TABLE members (
    session text NOT NULL REFERENCES sessions (name),
    name text NOT NULL,
    seq bigserial,
    token_id text NOT NULL,
    PRIMARY KEY (session, name)
);

-- Each session's lease state (SessionLease.to_json: fencing counter, grant, standby queue,
-- reservation) and its times, in seconds of the database's clock. The row is locked
-- (SELECT ... FOR UPDATE) by every lease work on the session: that serialises grants, fencing
-- checks and head moves across coordinators.
CREATE TABLE leases (
    session text PRIMARY KEY,
    state jsonb NOT NULL,
    expires_at double precision NOT NULL DEFAULT 0,
    reserved_until double precision NOT NULL DEFAULT 0
);

CREATE TABLE heads (
    session text PRIMARY KEY,
    head bytea NOT NULL
);

CREATE TABLE head_log (
    session text NOT NULL,
    seq bigint NOT NULL,
    entry jsonb NOT NULL,
    PRIMARY KEY (session, seq)
);

-- Completeness marks: an id whose whole subgraph the session stores, with its summary.
CREATE TABLE marks (
    session text NOT NULL,
    oid bytea NOT NULL,
    summary bytea NOT NULL,
    PRIMARY KEY (session, oid)
);

-- The retention policy's fields, and where gc cut the history.
CREATE TABLE retention (
    session text PRIMARY KEY,
    policy jsonb NOT NULL DEFAULT '{}',
    shallow bytea[] NOT NULL DEFAULT '{}',
    retained bytea[] NOT NULL DEFAULT '{}'
);
