-- Analyst queries over the Causality warehouse (docs/schema.md).
--
-- Run one with `causality sql -q "..."`, or paste it into `causality sql`.
-- Each query starts with a `-- name:` line and ends with a line ending in
-- ';'. They run unchanged on ClickHouse 18.16 and on current ClickHouse
-- (checked with chDB); every one is run by a test against data it inserts
-- (services/internal/warehouse/queries_test.go, through the
-- sink's handler).
--
-- Each event is counted once: either FROM events FINAL (copies of an
-- event collapse at query time), or aggregates that ignore copies
-- (uniqExact(event_id), uniqExact(device_id), min, max). The sessions view
-- and the session_parts table are copy-proof by construction; the
-- events_per_minute rollup counts stored rows (see docs/schema.md).

-- name: event_mix_per_app_version
-- What each app version sends: events per type.
SELECT app_id, app_version, event_type, count() AS events
FROM events FINAL
WHERE event_date >= today() - 30
GROUP BY app_id, app_version, event_type
ORDER BY app_id, app_version, events DESC, event_type;

-- name: funnel_view_cart_purchase
-- Devices that viewed a screen, then added to the cart, then purchased,
-- each step within one hour of the first (device clock).
SELECT
    app_id,
    countIf(level >= 1) AS viewed,
    countIf(level >= 2) AS added_to_cart,
    countIf(level >= 3) AS purchased
FROM
(
    SELECT app_id, device_id,
        windowFunnel(3600)(timestamp, event_type = 'screen_view', event_type = 'add_to_cart', event_type = 'purchase_complete') AS level
    FROM events
    WHERE event_date >= today() - 30
    GROUP BY app_id, device_id
)
GROUP BY app_id
ORDER BY app_id;

-- name: day_n_retention
-- Devices by the day they were first seen, and how many came back 1 and 7
-- days later.
SELECT
    app_id,
    first_day,
    count() AS devices,
    countIf(has(days, first_day + 1)) AS day_1,
    countIf(has(days, first_day + 7)) AS day_7
FROM
(
    SELECT app_id, device_id, min(event_date) AS first_day, groupUniqArray(event_date) AS days
    FROM events
    WHERE event_date >= today() - 60
    GROUP BY app_id, device_id
)
GROUP BY app_id, first_day
ORDER BY app_id, first_day;

-- name: sessions_per_device
-- Sessions per device, their mean length and the screens they showed.
SELECT
    app_id,
    device_id,
    count() AS sessions,
    round(avg(length_ms) / 1000, 1) AS avg_length_s,
    sum(screens) AS screen_views
FROM sessions
GROUP BY app_id, device_id
ORDER BY app_id, sessions DESC, device_id
LIMIT 100;

-- name: session_length_by_version
-- Session length (device clock) per app version and platform.
SELECT
    app_id,
    app_version,
    platform,
    count() AS sessions,
    max(length_ms) AS longest_ms,
    round(avg(events), 2) AS avg_events
FROM sessions
GROUP BY app_id, app_version, platform
ORDER BY app_id, app_version, platform;

-- name: top_screens
-- The most viewed screens of each app and how many devices saw them.
SELECT app_id, screen_name, count() AS views, uniqExact(device_id) AS devices
FROM events FINAL
WHERE event_type = 'screen_view'
GROUP BY app_id, screen_name
ORDER BY app_id, views DESC, screen_name
LIMIT 20 BY app_id;

-- name: devices_per_cohort
-- Devices and events per cohort (app version x platform).
SELECT app_id, app_version, platform, uniqExact(device_id) AS devices, uniqExact(event_id) AS events
FROM events
GROUP BY app_id, app_version, platform
ORDER BY app_id, app_version, platform;

-- name: events_per_minute
-- Events per minute over the last hour, from the per-minute rollup
-- (device clock).
SELECT minute, app_id, sum(events) AS events
FROM events_per_minute
WHERE minute >= now() - INTERVAL 1 HOUR
GROUP BY minute, app_id
ORDER BY minute, app_id;

-- name: events_per_minute_exact
-- The same from the events themselves, on the skew-corrected event time.
SELECT toStartOfMinute(event_time) AS minute, app_id, count() AS events
FROM events FINAL
WHERE event_date >= today() - 1 AND event_time >= now() - INTERVAL 1 HOUR
GROUP BY minute, app_id
ORDER BY minute, app_id;

-- name: emulator_share_per_build
-- Suspicious signals per build: share of devices that are emulators or
-- jailbroken (rooted).
SELECT
    app_id,
    app_version,
    build_number,
    uniqExact(device_id) AS devices,
    uniqExactIf(device_id, is_emulator = 1) AS emulators,
    uniqExactIf(device_id, is_jailbroken = 1) AS jailbroken,
    round(emulators / devices, 3) AS emulator_share
FROM events
GROUP BY app_id, app_version, build_number
ORDER BY emulator_share DESC, app_id, app_version, build_number;

-- name: sequence_gaps
-- Installs whose per-install sequence numbers have gaps (lost events,
-- missing > 0) or repeats under new ids (replays, missing < 0).
SELECT
    app_id,
    install_id,
    count() AS events,
    max(sequence) - min(sequence) + 1 AS expected,
    toInt64(expected) - toInt64(events) AS missing
FROM events FINAL
WHERE sequence > 0
GROUP BY app_id, install_id
HAVING missing != 0
ORDER BY abs(missing) DESC, app_id, install_id
LIMIT 100;

-- name: clock_offset_by_model
-- How far device clocks are from the server's (received - sent, which
-- also includes the network delay), per device model.
SELECT
    platform,
    device_model,
    count() AS events,
    round(avg(received_at_ms - sent_at_ms) / 1000, 1) AS avg_offset_s,
    round(max(abs(received_at_ms - sent_at_ms)) / 1000, 1) AS max_offset_s
FROM events FINAL
WHERE sent_at_ms > 0
GROUP BY platform, device_model
ORDER BY max_offset_s DESC, platform, device_model
LIMIT 50;

-- name: revenue_per_day
-- Orders and revenue per day and currency (device day).
SELECT app_id, event_date AS day, currency, count() AS orders, sum(amount_cents) / 100 AS revenue
FROM events FINAL
WHERE event_type = 'purchase_complete'
GROUP BY app_id, day, currency
ORDER BY app_id, day, currency;

-- name: payment_methods
-- A field of the typed payload (JSON text): purchases per payment method.
SELECT app_id, visitParamExtractString(payload, 'payment_method') AS payment_method, count() AS orders
FROM events FINAL
WHERE event_type = 'purchase_complete'
GROUP BY app_id, payment_method
ORDER BY app_id, orders DESC, payment_method;

-- name: property_breakdown
-- Devices and events per value of the custom property 'plan'.
SELECT app_id, props.value[indexOf(props.key, 'plan')] AS plan, uniqExact(device_id) AS devices, count() AS events
FROM events FINAL
WHERE has(props.key, 'plan')
GROUP BY app_id, plan
ORDER BY app_id, plan;

-- name: crashes_per_version
-- Crashes per session for each app version.
SELECT
    app_id,
    app_version,
    uniqExact(session_id) AS sessions,
    uniqExactIf(event_id, event_type = 'app_crash') AS crashes,
    round(crashes / sessions, 3) AS crashes_per_session
FROM events
GROUP BY app_id, app_version
ORDER BY crashes_per_session DESC, app_id, app_version;

-- name: recent_anomalies
-- The detector's latest findings.
SELECT detected_at, app_id, kind, cohort, device_id, window_start, window_end, score, threshold
FROM anomalies FINAL
ORDER BY detected_at DESC, app_id, kind
LIMIT 50;
