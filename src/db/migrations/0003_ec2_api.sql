-- What the EC2 API needs: reservations (instances launched together, and the client
-- token that makes a launch idempotent), tags, termination and stop protection, and a
-- key pair id and AWS-style fingerprint.
CREATE TABLE reservations (
    id              TEXT PRIMARY KEY,          -- r- + 17 hex
    client_token    TEXT UNIQUE,               -- RunInstances' ClientToken, if given
    request_digest  TEXT NOT NULL DEFAULT '',  -- the launch parameters, to refuse a reused token
    created_at      TEXT NOT NULL
);

ALTER TABLE instances ADD COLUMN reservation_id TEXT;
ALTER TABLE instances ADD COLUMN disable_api_termination INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN disable_api_stop INTEGER NOT NULL DEFAULT 0;

-- Instances launched before reservations existed each get one of their own.
UPDATE instances SET reservation_id = 'r-' || substr(lower(hex(randomblob(9))), 1, 17);
INSERT INTO reservations (id, created_at) SELECT reservation_id, created_at FROM instances;

-- Tags other than Name (which is the instance's name column, shared with the REST API).
CREATE TABLE instance_tags (
    instance_id  TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (instance_id, key)
);

ALTER TABLE key_pairs ADD COLUMN key_pair_id TEXT;
ALTER TABLE key_pairs ADD COLUMN ec2_fingerprint TEXT;  -- NULL: computed from the public key
UPDATE key_pairs SET key_pair_id = 'key-' || substr(lower(hex(randomblob(9))), 1, 17);
CREATE UNIQUE INDEX key_pairs_id ON key_pairs(key_pair_id);
