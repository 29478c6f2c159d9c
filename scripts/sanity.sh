#!/usr/bin/env bash
# Run `ansible-test sanity` on a copy of this checkout laid out as ansible_collections/mlflowops/maintenance.
# Works on a closed network: ansible-test's pip bootstrap is served from tests/utils.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
cache=$HOME/.ansible/test/cache
mkdir -p "$cache"
for name in get_pip_24_2.py get_pip_25_1.py get_pip_25_0.py; do
  [ -f "$cache/$name" ] || cp "$repo/tests/utils/ansible_test_pip_bootstrap.py" "$cache/$name"
done
work=$(mktemp -d "${TMPDIR:-/tmp}/mlflowops-sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest=$("$repo/scripts/collection_tree.sh" "$work") || exit 1
cd "$dest"
export PATH="$venv/bin:$PATH"
ansible-test sanity --venv --python 3.11 --color no "$@"
