-- Port forwards (issue 16): a host port, on the service's forward bind address, relayed
-- to a port of an instance. The host port is the forward's identity: one listener each.
CREATE TABLE port_forwards (
    host_port      INTEGER PRIMARY KEY CHECK (host_port BETWEEN 1 AND 65535),
    instance_id    TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    instance_port  INTEGER NOT NULL CHECK (instance_port BETWEEN 1 AND 65535),
    created_at     TEXT NOT NULL
);

CREATE INDEX port_forwards_instance ON port_forwards(instance_id);

-- A terminated instance's forwards end in the same write as its state, whichever path
-- terminated it (terminate, the recovery pass, a failed launch); the forwards service
-- closes their listeners when it next looks.
CREATE TRIGGER port_forwards_end_with_instance AFTER UPDATE OF state ON instances
WHEN NEW.state = 'terminated'
BEGIN
    DELETE FROM port_forwards WHERE instance_id = NEW.id;
END;
