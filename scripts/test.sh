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

status=0
.venv/bin/python -m pytest -q -p no:cacheprovider "${markers[@]}" "${extra[@]}" || status=$?
if [ "${#extra[@]}" -eq 0 ]; then
  echo "--- ruff and mypy on sncli/" >&2
  .venv/bin/ruff check sncli || status=1
  .venv/bin/mypy sncli || status=1
fi
bash scripts/services.sh stop all >/dev/null 2>&1 || true
exit $status
