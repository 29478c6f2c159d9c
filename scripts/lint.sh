#!/usr/bin/env bash
# The Ansible ecosystem's own linters, on a copy of this checkout laid out as ansible_collections/mlflowops/maintenance
# (the tools resolve mlflowops.maintenance.* from there, and the checkout stays clean: ansible-lint leaves .ansible/,
# antsibull-changelog a plugin cache). Fails on any violation of any of them:
#   ansible-lint --profile production; antsibull-docs lint-collection-docs --plugin-docs;
#   antsibull-changelog lint (fragments) and lint-changelog-yaml; every role task carries a capability tag.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
work=$(mktemp -d "${TMPDIR:-/tmp}/mlflowops-lint.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest=$("$repo/scripts/collection_tree.sh" "$work") || exit 1
cd "$dest"
export PATH="$venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH=$work ANSIBLE_NOCOLOR=1 NO_COLOR=1

failed=()
run() {
  echo "== $*"
  "$@" || failed+=("$1")
}
run ansible-lint --profile production --offline --nocolor
run antsibull-docs lint-collection-docs --plugin-docs .
run antsibull-changelog lint
run antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml
run python - <<'EOF'
"""Every task of every role carries a tag (its own or its block's) naming its capability."""
import glob
import sys

import yaml

BLOCK_KEYS = ("block", "rescue", "always")
missing = []


def walk(tasks, path, inherited):
    for task in tasks or []:
        tags = inherited + list(task.get("tags") or [])
        if any(key in task for key in BLOCK_KEYS):
            for key in BLOCK_KEYS:
                walk(task.get(key), path, tags)
        elif not tags:
            missing.append("%s: %s" % (path, task.get("name", "(unnamed task)")))


for path in sorted(glob.glob("roles/*/tasks/*.yml")):
    with open(path) as handle:
        walk(yaml.safe_load(handle), path, [])
for line in missing:
    print("untagged task: " + line)
print("role tasks: %s" % ("%d untagged" % len(missing) if missing else "all tagged"))
sys.exit(1 if missing else 0)
EOF

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "lint: all clean"
