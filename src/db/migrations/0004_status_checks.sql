-- Status checks (issue 16): when SSH first answered in the instance's current run, kept
-- across a restart of the service, and the guest's SSH host public keys (OpenSSH lines,
-- one per line), kept across stop and start.
ALTER TABLE instances ADD COLUMN reachable_at TEXT;
ALTER TABLE instances ADD COLUMN host_public_keys TEXT;
