#!/usr/bin/env bash
# Start/stop the local Kafka + ClickHouse pair used by integration tests.
#
# Usage: servers.sh up|down|status|env
#   env prints export lines for the ports in use:
#     eval "$(deploy/local/servers.sh env)"
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kafka_port=${CAUSALITY_KAFKA_PORT:-19092}
clickhouse_port=${CAUSALITY_CLICKHOUSE_PORT:-19000}

case ${1:-} in
  up)
    "$here/kafka.sh" start
    "$here/clickhouse.sh" start
    ;;
  down)
    # Stop both even if one of them fails.
    rc=0
    "$here/kafka.sh" stop || rc=$?
    "$here/clickhouse.sh" stop || rc=$?
    exit "$rc"
    ;;
  status)
    rc=0
    "$here/kafka.sh" status || rc=$?
    "$here/clickhouse.sh" status || rc=$?
    exit "$rc"
    ;;
  env)
    echo "export CAUSALITY_TEST_KAFKA=127.0.0.1:$kafka_port"
    echo "export CAUSALITY_TEST_CLICKHOUSE=127.0.0.1:$clickhouse_port"
    ;;
  *)
    echo "usage: $0 up|down|status|env" >&2
    exit 2
    ;;
esac
