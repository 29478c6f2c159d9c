# -*- coding: utf-8 -*-
"""Start or stop a throwaway MLflow server of an OLDER release (tests/harness/old_mlflow.py, 2.12.2 by default),
for the upgrade Molecule scenario and manual upgrade trials.

    old_mlflow_service.py start --dir DIR [--version V]
    old_mlflow_service.py stop --dir DIR

``start`` copies the cached venv of that release to DIR/venv (hard links), starts its server on a SQLite store
(DIR/mlflow.db) and prints a JSON object, also written to DIR/state.json: url, backend_store_uri, db_path,
artifacts_destination, venv, the start and stop commands (for mlflow_service_manager=command), the old
version and ``new_version`` (the MLflow of the Python running this script, whose wheels are in the pip cache).
``stop`` stops the server and removes the venv copy and the state file.
"""

import argparse
import glob
import importlib.metadata
import json
import os
import shlex
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

# pylint: disable=wrong-import-position
from harness.old_mlflow import OLD_VERSION, copy_venv  # noqa: E402
from harness.standin import StandIn  # noqa: E402


def state_path(directory):
    return os.path.join(directory, "state.json")


def start(args):
    root = os.path.abspath(args.dir)
    os.makedirs(root, exist_ok=True)
    venv = os.path.join(root, "venv")
    db_path = os.path.join(root, "mlflow.db")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        copy_venv(args.version, venv)
    service = StandIn(root, python, "sqlite:///%s" % db_path)
    service.start()
    state = dict(url=service.url, backend_store_uri=service.backend_store_uri, db_path=db_path,
                 artifacts_destination=os.path.join(root, "artifacts"), venv=venv, root=root,
                 start_command=service.start_command, stop_command=service.stop_command,
                 version=args.version, new_version=importlib.metadata.version("mlflow"))
    with open(state_path(root), "w") as handle:
        json.dump(state, handle)
    print(json.dumps(state))


def stop(args):
    root = os.path.abspath(args.dir)
    try:
        with open(state_path(root)) as handle:
            state = json.load(handle)
    except FileNotFoundError:
        print(json.dumps(dict(stopped=False, reason="no state file")))
        return
    subprocess.run(shlex.split(state["stop_command"]), check=False, capture_output=True, timeout=120)
    for path in [state["venv"]] + glob.glob(state["venv"] + ".*"):
        shutil.rmtree(path, ignore_errors=True)
    os.remove(state_path(root))
    print(json.dumps(dict(stopped=True)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--dir", required=True, help="working directory of the server (venv, store, logs, state)")
    parser.add_argument("--version", default=OLD_VERSION, help="the older MLflow release (default %(default)s)")
    args = parser.parse_args()
    dict(start=start, stop=stop)[args.command](args)


if __name__ == "__main__":
    main()
