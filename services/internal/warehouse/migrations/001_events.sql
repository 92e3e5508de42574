-- The events table: one row per stored copy of an event; FINAL (or GROUP BY
-- event_id) shows each event once. Copies of one event share every column
-- of the partition and sorting keys (all set by the device), so
-- ReplacingMergeTree collapses them during merges. received_at* and
-- event_time* may differ between copies and are never part of a key.
-- Plain String instead of LowCardinality(String): ClickHouse 18.16 only
-- accepts LowCardinality with allow_experimental_low_cardinality_type=1.
CREATE TABLE IF NOT EXISTS {database}.events (
    event_id String,
    app_id String,
    device_id String,
    install_id String,
    session_id String,
    user_id String,
    timestamp_ms Int64,
    sent_at_ms Int64,
    received_at_ms Int64,
    event_time_ms Int64,
    event_date Date,
    timestamp DateTime,
    event_time DateTime,
    received_at DateTime,
    sequence UInt64,
    correlation_id String,
    idempotency_key String,
    platform String,
    os_version String,
    app_version String,
    build_number String,
    device_model String,
    manufacturer String,
    screen_width Int32,
    screen_height Int32,
    locale String,
    timezone String,
    network_type String,
    carrier String,
    is_jailbroken UInt8,
    is_emulator UInt8,
    sdk_version String,
    event_type String,
    screen_name String,
    product_id String,
    amount_cents Int64,
    currency String,
    custom_name String,
    payload String,
    props Nested(key String, value String)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_date)
ORDER BY (app_id, event_type, event_date, device_id, event_id);
