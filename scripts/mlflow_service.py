# -*- coding: utf-8 -*-
"""Start, stop or inspect a throwaway MLflow tracking server for Molecule, the demo and manual tests.

    mlflow_service.py start --dir DIR [--backend-store-uri URI] [--artifacts-destination DEST] [--port P]
    mlflow_service.py stop --dir DIR
    mlflow_service.py status --dir DIR

``start`` prints a JSON object (url, pid, backend_store_uri, artifacts_destination) and also writes
it to DIR/state.json; the server keeps running until ``stop``.
"""

import argparse
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from harness.services import MlflowServer, http_get  # noqa: E402  pylint: disable=wrong-import-position


def state_path(directory):
    return os.path.join(directory, "state.json")


def start(args):
    os.makedirs(args.dir, exist_ok=True)
    server = MlflowServer(backend_store_uri=args.backend_store_uri, artifacts_destination=args.artifacts_destination,
                          root=args.dir, port=args.port)
    server.start()
    server.detach()
    state = dict(url=server.url, pid=server.process.pid, backend_store_uri=server.backend_store_uri,
                 artifacts_destination=server.artifacts_destination, root=args.dir)
    with open(state_path(args.dir), "w") as handle:
        json.dump(state, handle)
    print(json.dumps(state))


def stop(args):
    try:
        with open(state_path(args.dir)) as handle:
            state = json.load(handle)
    except FileNotFoundError:
        print(json.dumps(dict(stopped=False, reason="no state file")))
        return
    try:
        os.killpg(state["pid"], signal.SIGTERM)
        for _attempt in range(100):
            os.killpg(state["pid"], 0)
            time.sleep(0.1)
        os.killpg(state["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.remove(state_path(args.dir))
    print(json.dumps(dict(stopped=True, pid=state["pid"])))


def status(args):
    with open(state_path(args.dir)) as handle:
        state = json.load(handle)
    try:
        state["health"] = http_get(state["url"] + "/health")[1].strip()
    except OSError as exc:
        state["health"] = "unreachable: %s" % exc
    print(json.dumps(state))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", required=True, help="working directory of the server (state, logs, default stores)")
    parser.add_argument("--backend-store-uri")
    parser.add_argument("--artifacts-destination")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    dict(start=start, stop=stop, status=status)[args.command](args)


if __name__ == "__main__":
    main()
