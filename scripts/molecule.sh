#!/usr/bin/env bash
# Run every Molecule scenario (default driver, localhost) against this checkout.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
export PATH="$venv/bin:$PATH"
MLFLOWOPS_COLLECTIONS_PATH=$("$venv/bin/python" -c "import sys; sys.path.insert(0, '$repo/tests'); from harness.runner import collections_path; print(collections_path())")
export MLFLOWOPS_COLLECTIONS_PATH
export ANSIBLE_COLLECTIONS_PATH=$MLFLOWOPS_COLLECTIONS_PATH
cd "$repo"
scenarios=${MOLECULE_SCENARIOS:-$(ls molecule)}
for scenario in $scenarios; do
  echo "== molecule test -s $scenario"
  molecule test -s "$scenario"
done
