#!/usr/bin/env bash
# The main job end to end on a fresh machine: install, start the local services,
# seed the ServiceNow emulator, move its records into Kafka with `sncli source poll`,
# write changes back with `sncli sink drain`, and show what happened at each step.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*" >&2; "$@"; }

step "Set up (.venv, Tansu broker, Pushgateway, Prometheus)"
bash scripts/setup.sh

# The same port rules as scripts/services.sh.
base="${SNCLI_PORT_BASE:-}"
kafka_port="${SNCLI_KAFKA_PORT:-${base:+$((base + 0))}}"; kafka_port="${kafka_port:-19092}"
push_port="${SNCLI_PUSHGATEWAY_PORT:-${base:+$((base + 1))}}"; push_port="${push_port:-19091}"
snow_port="${SNCLI_SNOW_PORT:-${base:+$((base + 4))}}"; snow_port="${snow_port:-18080}"
prom_port="${SNCLI_PROMETHEUS_PORT:-${base:+$((base + 6))}}"; prom_port="${prom_port:-19090}"
bootstrap="127.0.0.1:$kafka_port"
snow="http://127.0.0.1:$snow_port"
pushgateway="http://127.0.0.1:$push_port"
prometheus="http://127.0.0.1:$prom_port"

step "Start the local services (all on 127.0.0.1)"
bash scripts/services.sh start all
bash scripts/services.sh status all || true
if curl -fsS -o /dev/null "$pushgateway/-/ready" 2>/dev/null; then push_url="$pushgateway"; else push_url=""; fi
if [ -n "$push_url" ] && curl -fsS -o /dev/null "$prometheus/-/ready" 2>/dev/null; then prom_url="$prometheus"; else prom_url=""; fi

work="${SNCLI_SERVICES_DIR:-$root/.services}/demo"
rm -rf "$work" && mkdir -p "$work"
run_id="$(date +%s)"
src_topic="demo.incident.$run_id"
changes_topic="demo.incident.changes.$run_id"
dlq_topic="demo.dlq.$run_id"

step "Seed the ServiceNow emulator: 3 000 incidents over the last hour + 2 000 sharing ONE second (a bulk update)"
api() { curl -fsS -X "$1" -H 'Content-Type: application/json' "$snow/__emulator/$2" ${3:+-d "$3"}; echo; }
api POST reset >/dev/null
api POST generate '{"table": "incident", "count": 3000, "spread_seconds": 3600, "seed": 1}' >/dev/null
bulk_second="$(date -u -d '-10 minutes' '+%Y-%m-%d %H:%M:%S')"
api POST generate "{\"table\": \"incident\", \"count\": 2000, \"at\": \"$bulk_second\", \"spread_seconds\": 0, \"seed\": 2}" >/dev/null
echo "emulator at $snow holds $(curl -fsS "$snow/__emulator/tables" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["result"]["incident"])') incident records"

cat > "$work/sncli.yaml" <<YAML
servicenow:
  instance_url: $snow
  auth: {type: basic, username: admin, password: "\${SN_PASSWORD}"}
  rate_limit: null
kafka:
  bootstrap_servers: $bootstrap
  # The local broker (Tansu) takes about session.timeout.ms / 2 to form a consumer group.
  client: {session.timeout.ms: 6000}
offsets: {store: file, path: $work/offsets.json}
metrics: {pushgateway: ${push_url:-null}, job: sncli-demo}
source:
  page_size: 500
  safety_lag_seconds: 1
  tables:
    - {name: incident, topic: $src_topic}
sink:
  group_id: sncli-demo-$run_id
  workers: 8
  dlq_topic: $dlq_topic
  dlq_signing_key: "\${DLQ_SIGNING_KEY}"   # DLQ records are signed; dlq replay writes only those
  topics:
    - {topic: $changes_topic, table: incident}
YAML
DLQ_SIGNING_KEY="$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')"
export SN_PASSWORD=admin DLQ_SIGNING_KEY SNCLI_CONFIG="$work/sncli.yaml"
sncli=(.venv/bin/sncli --log-format json)

step "Validate the config and run the preflight checks"
run "${sncli[@]}" config validate
run "${sncli[@]}" doctor || echo "(doctor exit code $?: see the warnings above)"

step "sncli source poll: one bounded cycle, ServiceNow -> Kafka"
run "${sncli[@]}" source poll 2>"$work/poll.log"
echo "Kafka now holds:"
.venv/bin/python scripts/demo_kafka.py --bootstrap "$bootstrap" count "$src_topic" --show

step "Nothing changed in ServiceNow, so a second cycle moves nothing"
run "${sncli[@]}" source poll 2>>"$work/poll.log"

step "Offsets: where each table's cursor stands"
run "${sncli[@]}" offsets show

step "Produce changes for ServiceNow: 150 updates (PATCH), 50 new records (POST), 1 poison message"
.venv/bin/python scripts/demo_kafka.py --bootstrap "$bootstrap" changes --source-topic "$src_topic" \
  --topic "$changes_topic" --updates 150 --creates 50

step "sncli sink drain: Kafka -> ServiceNow (exit 3: the poison message went to the DLQ)"
set +e
run "${sncli[@]}" sink drain 2>"$work/drain.log"
drain_code=$?
set -e
echo "sink drain exit code: $drain_code"

step "The dead letter queue, with each record's error"
run "${sncli[@]}" dlq inspect || true

step "What ServiceNow holds now"
updated=$(curl -fsS -u admin:admin "$snow/api/now/table/incident?sysparm_query=short_description=updated%20by%20the%20sncli%20demo&sysparm_fields=sys_id&sysparm_limit=10000" \
  | .venv/bin/python -c 'import json,sys; print(len(json.load(sys.stdin)["result"]))')
created=$(curl -fsS -u admin:admin "$snow/api/now/table/incident?sysparm_query=short_descriptionSTARTSWITHcreated%20by%20the%20sncli%20demo&sysparm_fields=sys_id&sysparm_limit=10000" \
  | .venv/bin/python -c 'import json,sys; print(len(json.load(sys.stdin)["result"]))')
echo "incidents updated by the drain: $updated (expected 150); created: $created (expected 50)"

step "The updates flow back: the next poll picks up exactly the 200 changed records"
run "${sncli[@]}" --json source poll 2>>"$work/poll.log" | .venv/bin/python -c \
  'import json,sys; s=json.load(sys.stdin); print({t: v["records"] for t, v in s["tables"].items()}, "exit", s["exit_code"])'

if [ -n "$push_url" ]; then
  step "Metrics pushed to the Pushgateway ($push_url)"
  curl -fsS "$push_url/metrics" | grep -E '^(bridge_source_produce_total|bridge_sink_records_total|bridge_dlq_records_total|sncli_run_duration_seconds)\{' \
    | grep 'job="sncli-demo"' | head -12
fi

if [ -n "$prom_url" ]; then
  step "Alerts on Prometheus ($prom_url, rules deploy/prometheus/sncli-alerts.yml)"
  .venv/bin/python scripts/demo_alerts.py --prometheus "$prom_url" --pushgateway "$push_url" --job sncli-demo \
    || echo "(could not read the alerts from $prom_url)"
fi

step "Done"
echo "Pushgateway: ${push_url:-not running (prometheus-pushgateway not installed)}   metrics: ${push_url:+$push_url/metrics}"
echo "Prometheus:  ${prom_url:-not running (prometheus not installed)}   alerts: ${prom_url:+$prom_url/alerts}   graph: ${prom_url:+$prom_url/graph}"
echo "Grafana dashboard to import: deploy/grafana/sncli.json   Alert rules: deploy/prometheus/sncli-alerts.yml"
echo "Logs: $work/*.log   Config: $work/sncli.yaml   Stop the services: scripts/services.sh stop all"
[ "$updated" -eq 150 ] && [ "$created" -eq 50 ] && [ "$drain_code" -eq 3 ] || { echo "demo: unexpected result" >&2; exit 1; }
