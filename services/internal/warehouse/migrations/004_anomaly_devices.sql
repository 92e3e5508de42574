-- What 003 left out of a finding: the devices behind a cohort-wide finding
-- (at most 100; empty for per-device kinds, whose device is device_id), the
-- one-line summary and the alert rule that fired, as the detector writes
-- them. ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: Migrate takes
-- "column already exists" as applied (another process was first).
ALTER TABLE {database}.anomalies
    ADD COLUMN devices Array(String),
    ADD COLUMN summary String,
    ADD COLUMN rule String;
