# shellcheck shell=bash
# Helpers shared by deploy/local/*.sh (sourced, not run).

# Repo root: git top-level of this directory, else two levels up.
LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(git -C "$LOCAL_DIR" rev-parse --show-toplevel 2>/dev/null || (cd "$LOCAL_DIR/../.." && pwd))
STATE_ROOT=${CAUSALITY_STATE:-$REPO_ROOT/.causality}
CACHE_ROOT=${CAUSALITY_CACHE:-$HOME/.cache/causality}
export LOCAL_DIR REPO_ROOT STATE_ROOT CACHE_ROOT

# LOG_TAG (set by each script) prefixes messages.
log() { printf '[%s] %s\n' "${LOG_TAG:-local}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# now_ms / since T0_MS: wall clock in ms and seconds elapsed as "1.23".
now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
since() {
  local d=$(($(now_ms) - $1))
  printf '%d.%02d' $((d / 1000)) $((d % 1000 / 10))
}

# apt_install PKG...: install Debian packages (root only), apt-get update once.
_apt_updated=0
apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    die "missing packages: $*; run as root: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $*"
  fi
  if [[ $_apt_updated -eq 0 ]]; then
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
    _apt_updated=1
  fi
  log "apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >&2
}

# need_cmd CMD PKG: make sure CMD exists, installing PKG if not.
need_cmd() {
  command -v "$1" >/dev/null 2>&1 || apt_install "$2"
  command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}

# pid_alive PIDFILE PATTERN: true if the pid in PIDFILE runs a command line
# containing PATTERN (guards against stale pid files and pid reuse).
pid_alive() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# port_open PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# proc_running PID: true if PID exists and is not a zombie.
proc_running() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
  [[ -n $state && $state != Z ]]
}

# stop_pid NAME PIDFILE PATTERN [GRACE_SECONDS]: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local name=$1 pidfile=$2 pattern=$3 grace=${4:-20} pid i
  if ! pid_alive "$pidfile" "$pattern"; then
    rm -f "$pidfile"
    log "$name not running"
    return 0
  fi
  pid=$(<"$pidfile")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    proc_running "$pid" || break
    sleep 0.1
  done
  if proc_running "$pid"; then
    log "$name did not exit in ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      proc_running "$pid" || break
      sleep 0.1
    done
  fi
  rm -f "$pidfile"
  log "$name stopped"
}

# take_lock FILE [FD]: serialize concurrent runs (e.g. make -j) on FILE.
take_lock() {
  local fd=${2:-9}
  mkdir -p "$(dirname "$1")"
  eval "exec $fd>\"\$1\""
  flock -w 300 "$fd" || die "could not lock $1"
}

# tail_log FILE...: print the end of log files to stderr (for failures).
tail_log() {
  local f
  for f in "$@"; do
    [[ -f $f ]] || continue
    printf -- '----- last lines of %s -----\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
}
