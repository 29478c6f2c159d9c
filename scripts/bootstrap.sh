#!/usr/bin/env bash
# Install what the tests, the demo and the benchmarks need on a fresh Debian machine:
# PostgreSQL's server binaries (the tests start their own clusters), zstd, sqlite3, rsync, openssl,
# and a virtualenv with the runtime and test requirements.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
python=${PYTHON:-python3}

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v zstd >/dev/null || missing+=(zstd)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v rsync >/dev/null || missing+=(rsync)
command -v openssl >/dev/null || missing+=(openssl)
# MySQL/MariaDB stores: the dump and client tools, and the throwaway server of the tests.
command -v mariadb-dump >/dev/null || missing+=(mariadb-client)
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
# The fleet tests: one sshd per simulated host, an unprivileged user with sudo, the report's screenshot test.
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v sudo >/dev/null || missing+=(sudo)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "bootstrap: please install ${missing[*]} (apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
fi
# Debian's package starts a cluster of its own; the tests never use it.
if [ "$(id -u)" = 0 ] && command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_lsclusters -h | awk '$4=="online"{print $1, $2}' | while read -r version cluster; do
    pg_ctlcluster "$version" "$cluster" stop || true
  done
fi

stamp=$venv/.requirements.sha
want=$(cat "$repo/requirements.txt" "$repo/tests/requirements.txt" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python requirements into $venv"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v 'is ignored' || true
  "$venv/bin/python" -m pip install -q -r "$repo/requirements.txt" -r "$repo/tests/requirements.txt" 2>&1 \
    | grep -v 'is ignored' || true
  "$venv/bin/python" -c "import mlflow, ansible, moto, psycopg2, boto3, psutil, requests" >/dev/null
  echo "$want" > "$stamp"
fi
