-- Per-minute counts by app, version, platform and event type, filled by a
-- materialized view on every insert into events. Keyed on the device's
-- timestamp (the same for every copy of an event). It counts rows as they
-- are inserted: a copy that got past the sink's recent-id cache counts
-- twice here (see docs/schema.md); exact counts come from events FINAL.
CREATE TABLE IF NOT EXISTS {database}.events_per_minute (
    minute DateTime,
    app_id String,
    app_version String,
    platform String,
    event_type String,
    events UInt64
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (app_id, minute, app_version, platform, event_type);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.events_per_minute_mv TO {database}.events_per_minute AS
SELECT
    toStartOfMinute(timestamp) AS minute,
    app_id,
    app_version,
    platform,
    event_type,
    count() AS events
FROM {database}.events
GROUP BY minute, app_id, app_version, platform, event_type;

-- Sessions: partial aggregates per (app, day, device, session). Every state
-- is insensitive to duplicates: min and max of the device timestamp, and
-- the exact set of event ids (all events, screen views), so a copy of an
-- event that reaches the table changes nothing.
CREATE TABLE IF NOT EXISTS {database}.session_parts (
    app_id String,
    day Date,
    device_id String,
    session_id String,
    start_ms AggregateFunction(min, Int64),
    end_ms AggregateFunction(max, Int64),
    events AggregateFunction(uniqExact, String),
    screens AggregateFunction(uniqExactIf, String, UInt8),
    app_version AggregateFunction(anyLast, String),
    platform AggregateFunction(anyLast, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (app_id, day, device_id, session_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.session_parts_mv TO {database}.session_parts AS
SELECT
    app_id,
    event_date AS day,
    device_id,
    session_id,
    minState(timestamp_ms) AS start_ms,
    maxState(timestamp_ms) AS end_ms,
    uniqExactState(event_id) AS events,
    uniqExactIfState(event_id, event_type = 'screen_view') AS screens,
    anyLastState(app_version) AS app_version,
    anyLastState(platform) AS platform
FROM {database}.events
WHERE session_id != ''
GROUP BY app_id, day, device_id, session_id;

-- One row per session: start, end and length by the device clock (ms),
-- events and screen views counted once each.
CREATE VIEW IF NOT EXISTS {database}.sessions AS
SELECT
    app_id,
    device_id,
    session_id,
    anyLastMerge(app_version) AS app_version,
    anyLastMerge(platform) AS platform,
    minMerge(start_ms) AS start_ms,
    maxMerge(end_ms) AS end_ms,
    end_ms - start_ms AS length_ms,
    uniqExactMerge(events) AS events,
    uniqExactIfMerge(screens) AS screens
FROM {database}.session_parts
GROUP BY app_id, device_id, session_id;
