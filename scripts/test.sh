#!/usr/bin/env bash
# Every test of the collection, as CI runs it: ansible-test sanity, unit tests, integration tests against
# real MLflow / PostgreSQL / S3 services that the tests start themselves, and the Molecule scenarios.
# Usage: scripts/test.sh [sanity|unit|integration|molecule ...]   (default: all, in that order)
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export VENV=${VENV:-$repo/.venv}
cd "$repo"
VENV=$VENV scripts/bootstrap.sh || exit 1

steps=${*:-sanity unit integration molecule}
declare -A status duration
failed=0
for step in $steps; do
  echo
  echo "=============== $step ==============="
  started=$(date +%s)
  case $step in
    sanity) scripts/sanity.sh ;;
    unit) "$VENV/bin/python" -m pytest tests/unit -q ;;
    integration) "$VENV/bin/python" -m pytest tests/integration -q --durations=15 ;;
    molecule) scripts/molecule.sh ;;
    *) echo "unknown step $step"; false ;;
  esac
  rc=$?
  duration[$step]=$(( $(date +%s) - started ))
  if [ $rc -eq 0 ]; then status[$step]=passed; else status[$step]="FAILED ($rc)"; failed=1; fi
done

echo
echo "=============== summary ==============="
for step in $steps; do
  printf '%-12s %-12s %4ss\n' "$step" "${status[$step]}" "${duration[$step]}"
done
exit $failed
