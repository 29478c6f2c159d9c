# -*- coding: utf-8 -*-
"""A stand-in service manager for the upgrade role's command-based service step.

``StandIn`` drives old_mlflow.py's pidfile service (``python old_mlflow.py service start|stop ...``):
the role gets ``start_command``/``stop_command`` (mlflow_service_manager=command), the tests start and
stop the same server directly. Any backend store URI MLflow takes (SQLite, PostgreSQL, MySQL).
"""

import os
import sys

from harness.runner import REPO_ROOT
from harness.services import free_port, http_get, wait_until

SERVICE = os.path.join(REPO_ROOT, "tests", "harness", "old_mlflow.py")


class StandIn:
    """The command-based service step, driving old_mlflow.py's pidfile service manager."""

    def __init__(self, root, python, backend_store_uri):
        self.root = root
        self.python = python
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.backend_store_uri = backend_store_uri
        common = "%s %s service %%s --dir %s --python %s --backend-store-uri '%s' --artifacts-destination %s --port %d" % (
            sys.executable, SERVICE, root, python, backend_store_uri, os.path.join(root, "artifacts"), self.port)
        self.start_command = common % "start"
        self.stop_command = common % "stop"

    def start(self, timeout=240):
        assert os.system(self.start_command + " >/dev/null") == 0
        wait_until(lambda: http_get(self.url + "/health")[1].strip() == "OK", timeout, "old mlflow server",
                   log_path=os.path.join(self.root, "server.log"))

    def stop(self):
        os.system(self.stop_command + " >/dev/null")

    def version(self):
        return http_get(self.url + "/version", timeout=5)[1].strip()
