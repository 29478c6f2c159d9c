#!/usr/bin/env bash
# Copy this checkout (tracked and untracked files that git does not ignore) into
# ROOT/ansible_collections/mlflowops/maintenance, the layout ansible-test and the linters need, as a fresh git
# repository, and print that path. The caller owns ROOT (and removes it).
# Usage: dest=$(scripts/collection_tree.sh ROOT)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=$1/ansible_collections/mlflowops/maintenance
mkdir -p "$dest"
cd "$repo"
git ls-files -co --exclude-standard -z | xargs -0 -I{} cp --parents {} "$dest/" 2>/dev/null || true
cd "$dest"
git init -q && git add -A >/dev/null 2>&1
echo "$dest"
