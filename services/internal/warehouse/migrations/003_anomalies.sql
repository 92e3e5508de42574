-- Anomalies found by the detector, one row per finding (id chosen by the
-- detector, so a retried write collapses). cohort names the group, e.g.
-- 'app_version=2.3.0,platform=android'; device_id is '' for cohort-wide
-- findings. baseline and evidence are JSON documents written by the
-- detector (what was expected, and the windows or events that deviate).
CREATE TABLE IF NOT EXISTS {database}.anomalies (
    id String,
    kind String,
    app_id String,
    cohort String,
    device_id String,
    window_start DateTime,
    window_end DateTime,
    score Float64,
    threshold Float64,
    baseline String,
    evidence String,
    detected_at DateTime
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (app_id, kind, window_start, id);
