# -*- coding: utf-8 -*-
"""The execution environment definition (execution-environment.yml at the root, meta/execution-environment.yml for
introspection) as ansible-builder takes it: `ansible-builder create` accepts it as it is, and the build context it
writes installs this collection and its Python and system requirements. No container engine here: the galaxy and
introspection stages of the Containerfile are replayed with the staged files."""

import os
import re
import subprocess
import sys

import pytest
import yaml

from harness.runner import REPO_ROOT

pytestmark = [pytest.mark.integration]
BIN = os.path.dirname(sys.executable)
PYTHON_DEPS = ("requests", "psutil", "boto3", "zstandard", "psycopg2-binary", "PyMySQL")
SYSTEM_DEPS = ("postgresql-client", "zstd", "mariadb-client", "sqlite3")


def _names(lines):
    return set(re.split(r"[\s<>=\[;#]", line.strip(), maxsplit=1)[0] for line in lines
               if line.strip() and not line.startswith("#"))


def test_ansible_builder_create_accepts_the_definition_and_stages_the_collection(tmp_path):
    context = tmp_path / "context"
    subprocess.run([os.path.join(BIN, "ansible-builder"), "create", "-f", os.path.join(REPO_ROOT, "execution-environment.yml"),
                    "-c", str(context), "--output-filename", "Containerfile"], check=True, timeout=120,
                   capture_output=True, text=True)
    build = context / "_build"
    containerfile = (context / "Containerfile").read_text()
    for needle in ("COPY _build/requirements.txt requirements.txt", "COPY _build/bindep.txt bindep.txt",
                   "ansible-galaxy collection install", "--user-pip=requirements.txt", "--user-bindep=bindep.txt",
                   "ansible-core>=2.17,<2.20", "ansible-runner"):
        assert needle in containerfile, needle
    assert _names((build / "requirements.txt").read_text().splitlines()) >= set(PYTHON_DEPS)
    assert _names((build / "bindep.txt").read_text().splitlines()) >= set(SYSTEM_DEPS)

    # The galaxy stage: install the collection from the staged requirements, in /build (here: _build).
    collections = tmp_path / "collections"
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "-r", "requirements.yml",
                    "--collections-path", str(collections)], cwd=str(build), check=True, timeout=300,
                   capture_output=True, text=True)
    installed = collections / "ansible_collections" / "mlflowops" / "maintenance"
    for path in ("plugins/modules/server_info.py", "roles/prepare/tasks/main.yml", "playbooks/site.yml",
                 "playbooks/prepare.yml", "meta/runtime.yml", "meta/execution-environment.yml",
                 "extensions/awx/mlflow_credential_type.yml"):
        assert (installed / path).is_file(), path
    # The builder stage: ansible-builder's introspection finds the collection's own requirements.
    out_pip, out_bindep = tmp_path / "pip.txt", tmp_path / "bindep.txt"
    subprocess.run([sys.executable, str(build / "scripts" / "introspect.py"), "introspect",
                    "--write-pip=%s" % out_pip, "--write-bindep=%s" % out_bindep, str(collections)],
                   check=True, timeout=120, capture_output=True, text=True)
    from_collection = [line for line in out_pip.read_text().splitlines() if "from collection mlflowops.maintenance" in line]
    assert _names(from_collection) >= set(PYTHON_DEPS), from_collection
    from_collection = [line for line in out_bindep.read_text().splitlines() if "from collection mlflowops.maintenance" in line]
    assert _names(from_collection) >= set(SYSTEM_DEPS), from_collection


def test_collection_meta_declares_the_requirement_files():
    with open(os.path.join(REPO_ROOT, "meta", "execution-environment.yml")) as handle:
        meta = yaml.safe_load(handle)
    assert meta["dependencies"] == {"python": "requirements.txt", "system": "bindep.txt"}
    for name in meta["dependencies"].values():
        assert os.path.isfile(os.path.join(REPO_ROOT, name))
