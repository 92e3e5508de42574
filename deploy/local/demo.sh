#!/usr/bin/env bash
# The demo behind `make demo`: installs what is missing (ClickHouse from
# Debian; Go modules come with the build), builds bin/causality, starts
# `causality dev` in the background (collector + sink + detector + embedded
# Kafka + local ClickHouse, state in .causality/dev), drives the simulator through it,
# and prints where to look.
#
# Usage: demo.sh [start|stop|status]   (start is the default)
#
# Env: CAUSALITY_DEMO_DURATION (sim duration, 20s), CAUSALITY_DEMO_RATE
#      (events/s, 300), CAUSALITY_DEMO_DEVICES (100), CAUSALITY_STATE.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LOG_TAG=demo

DEV_DIR=$STATE_ROOT/dev
PIDFILE=$DEV_DIR/dev.pid
LOG=$DEV_DIR/dev.log
BIN=$REPO_ROOT/bin/causality
PATTERN="causality dev"
DURATION=${CAUSALITY_DEMO_DURATION:-20s}
RATE=${CAUSALITY_DEMO_RATE:-300}
DEVICES=${CAUSALITY_DEMO_DEVICES:-100}
# The documented default ports of `causality dev`.
PORTS=(7070 7071 7075 8080 9100 9092 9000 8123)

build() {
  command -v go >/dev/null 2>&1 || die "Go is missing: install Go 1.26 or later (https://go.dev/dl/), then run make demo again"
  log "building bin/causality"
  make -C "$REPO_ROOT" --no-print-directory build >&2
}

# count prints the number of distinct events in the dev warehouse.
count() {
  # Output: a header, a rule, the value, "(1 row)".
  "$BIN" sql -q "SELECT uniqExact(event_id) FROM events" 2>/dev/null | awk 'NR == 3 {print $1}'
}

start_dev() {
  if pid_alive "$PIDFILE" "$PATTERN"; then
    log "causality dev already running (pid $(<"$PIDFILE")), log $LOG"
    return 0
  fi
  local p
  for p in "${PORTS[@]}"; do
    port_open "$p" && die "127.0.0.1:$p is in use; causality dev needs ports ${PORTS[*]} (stop what holds it, or run bin/causality dev with other -ingest.*, -admin.addr and -dev.* ports)"
  done
  mkdir -p "$DEV_DIR"
  log "starting causality dev (log $LOG)"
  # setsid: it outlives this shell and Ctrl-C here; lock fds 8/9 are closed.
  (cd "$REPO_ROOT" && exec setsid "$BIN" dev -dev.dir "$DEV_DIR" </dev/null >>"$LOG" 2>&1 8>&- 9>&-) &
  echo $! >"$PIDFILE"
  local t0
  t0=$(now_ms)
  until curl -fsS -o /dev/null "http://127.0.0.1:9100/readyz" 2>/dev/null; do
    if ! proc_running "$(<"$PIDFILE")"; then
      rm -f "$PIDFILE"
      tail_log "$LOG"
      die "causality dev exited during start"
    fi
    if (($(now_ms) - t0 >= 60000)); then
      tail_log "$LOG"
      curl -sS "http://127.0.0.1:9100/readyz" >&2 || true
      die "causality dev not ready after 60 s (still running: $0 stop)"
    fi
    sleep 0.25
  done
  log "ready in $(since "$t0") s"
}

start() {
  local t0 before acked sim_out n i
  t0=$(now_ms)
  take_lock "$STATE_ROOT/.demo.lock"
  "$LOCAL_DIR/clickhouse.sh" install
  need_cmd curl curl
  build
  start_dev
  before=$(count)
  log "simulating $DEVICES devices at $RATE events/s for $DURATION"
  # The progress bar goes to stderr, the summary to stdout.
  sim_out=$("$BIN" sim -sim.key-file "$DEV_DIR/key" -sim.devices "$DEVICES" -sim.rate "$RATE" -sim.duration "$DURATION")
  echo "$sim_out"
  acked=$(awk '$1 == "acknowledged" {print $2; exit}' <<<"$sim_out")
  # Wait for the sink to store what was acknowledged (it inserts every second).
  for ((i = 0; i < 60; i++)); do
    n=$(count)
    ((${n:-0} >= ${before:-0} + ${acked:-0})) && break
    sleep 0.5
  done
  log "ClickHouse holds ${n:-?} events (${acked:-?} from this run); demo took $(since "$t0") s"
  cat <<EOF

The dev stack is running in the background (pid $(<"$PIDFILE"), log $LOG).

SQL prompt on ClickHouse:   bin/causality sql
  bin/causality sql -q "SELECT event_type, count() AS events FROM events FINAL GROUP BY event_type ORDER BY events DESC LIMIT 10"
  bin/causality sql -q "SELECT platform, app_version, uniqExact(device_id) AS devices, count() AS events FROM events FINAL GROUP BY platform, app_version ORDER BY devices DESC"
  bin/causality sql -q "SELECT countIf(event_type = 'product_view') AS viewed, countIf(event_type = 'add_to_cart') AS carted, countIf(event_type = 'checkout_start') AS checkouts, countIf(event_type = 'purchase_complete') AS purchased FROM events FINAL"
  (more in docs/queries.sql)

Metrics:   http://127.0.0.1:9100/metrics   (readiness: http://127.0.0.1:9100/readyz)
gRPC:      127.0.0.1:7071, e.g. grpcurl -plaintext 127.0.0.1:7071 list
           (grpcurl: go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4)
Detector:  127.0.0.1:7075 (gRPC DetectorService), token $(<"$DEV_DIR/detector-token") (in $DEV_DIR/detector-token)
  grpcurl -plaintext -H "authorization: Bearer $(<"$DEV_DIR/detector-token")" -d '{"from_oldest": true}' \\
    127.0.0.1:7075 causality.detect.v1.DetectorService/Subscribe
  bin/causality sql -q "SELECT detected_at, kind, cohort, device_id, score, summary FROM anomalies FINAL ORDER BY detected_at DESC LIMIT 10"
Raw TCP:   127.0.0.1:7070, e.g. bin/causality sim -sim.duration 10s
HTTP:      curl -X POST http://127.0.0.1:8080/v1/events/ingest -H "Content-Type: application/json" \\
             -d '{"event": {"appId": "my-app", "deviceId": "device-001", "screenView": {"screenName": "HomeScreen"}}}'
Dev key:   $(<"$DEV_DIR/key")  (in $DEV_DIR/key; app my-app)
Console:   http://127.0.0.1:8080/console/  sign in with the admin token $(<"$DEV_DIR/admin-token")
           (in $DEV_DIR/admin-token; docs/console.md)
Admin API: bin/causality admin apps list   (keys, rules, webhooks: docs/admin.md, docs/rules.md)

Stop it:   deploy/local/demo.sh stop
EOF
}

status() {
  if pid_alive "$PIDFILE" "$PATTERN"; then
    echo "causality dev running: pid $(<"$PIDFILE"), log $LOG"
    curl -sS "http://127.0.0.1:9100/readyz" || true
  else
    echo "causality dev stopped"
    return 3
  fi
}

case ${1:-start} in
  start) start ;;
  stop)
    take_lock "$STATE_ROOT/.demo.lock"
    stop_pid "causality dev" "$PIDFILE" "$PATTERN" 30
    ;;
  status) status ;;
  *)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac
