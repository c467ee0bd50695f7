-- Initial schema: images, key pairs, instances.
CREATE TABLE images (
    id            TEXT PRIMARY KEY,            -- ami-xxxxxxxx
    name          TEXT NOT NULL UNIQUE,
    description   TEXT NOT NULL DEFAULT '',
    os            TEXT NOT NULL,
    os_version    TEXT NOT NULL,
    architecture  TEXT NOT NULL,
    file_path     TEXT NOT NULL,
    format        TEXT NOT NULL DEFAULT 'qcow2',   -- qcow2 or raw, for the overlay's -F
    default_user  TEXT NOT NULL,
    source_url    TEXT,
    sha256        TEXT,
    size_bytes    INTEGER,
    created_at    TEXT NOT NULL
);

CREATE TABLE key_pairs (
    name                TEXT PRIMARY KEY,
    key_type            TEXT NOT NULL,
    public_key          TEXT NOT NULL,
    fingerprint_md5     TEXT NOT NULL,
    fingerprint_sha256  TEXT NOT NULL UNIQUE,
    has_private_key     INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL
);

CREATE TABLE instances (
    id             TEXT PRIMARY KEY,           -- i-xxxxxxxx, never reused
    name           TEXT NOT NULL DEFAULT '',
    instance_type  TEXT NOT NULL,
    vcpus          INTEGER NOT NULL,
    memory_mib     INTEGER NOT NULL,
    disk_gib       INTEGER NOT NULL,
    image_id       TEXT NOT NULL,
    image_name     TEXT NOT NULL DEFAULT '',   -- as it was at launch
    login_user     TEXT NOT NULL DEFAULT 'ubuntu', -- the image's default user
    key_name       TEXT,                       -- kept after the key pair is deleted
    public_key     TEXT,                       -- the key the instance was launched with
    user_data      TEXT,
    state          TEXT NOT NULL CHECK (state IN ('pending','running','stopping','stopped','error','terminated')),
    state_reason   TEXT,
    mac_address    TEXT NOT NULL UNIQUE,
    reserved_ip    TEXT,                       -- the DHCP reservation; NULL once released
    ip_address     TEXT,                       -- as last seen from libvirt
    host_key       TEXT,                       -- SSH host key fingerprint, trusted on first use
    created_at     TEXT NOT NULL,
    launched_at    TEXT,
    terminated_at  TEXT
);

CREATE INDEX instances_state ON instances(state);
CREATE UNIQUE INDEX instances_reserved_ip ON instances(reserved_ip) WHERE reserved_ip IS NOT NULL;
