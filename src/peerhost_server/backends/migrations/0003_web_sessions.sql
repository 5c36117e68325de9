-- The dashboard's web sessions (signed-in browsers), shared by every coordinator, so that a
-- browser signed in through one is signed in through all. Keyed by the sha256 of the
-- browser's cookie (never the cookie); the token's id and digest (never the token); the CSRF
-- token of its forms; the expiry in seconds on the database's clock. seq: creation order,
-- the oldest go first when too many are kept.
CREATE TABLE web_sessions (
    key text PRIMARY KEY,
    seq bigserial UNIQUE,
    token_id text NOT NULL,
    digest text NOT NULL,
    csrf text NOT NULL,
    expires float8 NOT NULL
);

CREATE INDEX web_sessions_by_expiry ON web_sessions (expires);
