-- Warm spares (issue 17, item 1): domains started paused before any request, so that a
-- launch of the same image and type only hands over its seed and resumes. A spare's ID,
-- MAC and address are taken like an instance's, and are the instance's once claimed.
-- `state`: 'building' until its paused domain is up and its address reserved, then
-- 'ready'; 'discarding' while what it made is removed. A row in any state at start-up
-- was left by an earlier run and is discarded.
CREATE TABLE spares (
    id            TEXT PRIMARY KEY,
    image_id      TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    mac_address   TEXT NOT NULL,
    reserved_ip   TEXT,
    state         TEXT NOT NULL CHECK (state IN ('building', 'ready', 'discarding')),
    created_at    TEXT NOT NULL
);
CREATE INDEX spares_ready ON spares(image_id, instance_type, created_at) WHERE state = 'ready';
