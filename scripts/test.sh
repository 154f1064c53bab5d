#!/usr/bin/env bash
# Set everything up on a fresh machine and run the whole test suite.
#   scripts/test.sh            the CI suite (long crash loops run as a seeded subset)
#   scripts/test.sh --full     every test, including all slow crash loops
#   scripts/test.sh -- ARGS    extra pytest arguments (e.g. -- tests/unit -k cursor)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh

markers=(-m "not slow")
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --full) markers=(); shift ;;
    --) shift; extra=("$@"); break ;;
    *) extra+=("$1"); shift ;;
  esac
done

services_dir="${SNCLI_SERVICES_DIR:-$root/.services}"
# Broker logs are appended across runs: remember where each one ends, so only this run's errors are counted.
declare -A log_start=()
for log in "$services_dir"/kafka-*.log; do
  [ -f "$log" ] && log_start["$log"]="$(stat -c %s "$log")"
done

status=0
.venv/bin/python -m pytest -q -p no:cacheprovider "${markers[@]}" "${extra[@]}" || status=$?
if [ "${#extra[@]}" -eq 0 ]; then
  echo "--- ruff and mypy on sncli/" >&2
  .venv/bin/ruff check sncli || status=1
  .venv/bin/mypy sncli || status=1
fi
# The local broker's own errors, for a loss a test could not explain (README, the local broker's known
# faults): services.sh runs Tansu at RUST_LOG=error by default, which logs e.g. a produce it refused after moving a
# producer's sequence.
for log in "$services_dir"/kafka-*.log; do
  [ -f "$log" ] || continue
  from=$(( ${log_start["$log"]:-0} + 1 ))
  errors="$(tail -c +"$from" "$log" | grep -c ERROR || true)"
  echo "--- broker log $(basename "$log"): $errors ERROR line(s) during this run" >&2
  tail -c +"$from" "$log" | grep ERROR | head -20 | cut -c1-400 >&2 || true
done
bash scripts/services.sh stop all >/dev/null 2>&1 || true
exit $status
