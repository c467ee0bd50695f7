-- What the service is doing to an instance (launching, starting, stopping, rebooting,
-- terminating, cleaning-up), apart from the state the API shows. NULL when idle.
-- A restart finds the work that was cut short here.
ALTER TABLE instances ADD COLUMN task TEXT
    CHECK (task IS NULL OR task IN ('launching','starting','stopping','rebooting','terminating','cleaning-up'));

-- Rows written before this column existed: pending meant a launch or a start, stopping a stop.
UPDATE instances SET task = 'launching' WHERE state = 'pending' AND launched_at IS NULL;
UPDATE instances SET task = 'starting' WHERE state = 'pending' AND launched_at IS NOT NULL;
UPDATE instances SET task = 'stopping' WHERE state = 'stopping';
