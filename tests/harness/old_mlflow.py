# -*- coding: utf-8 -*-
"""An older MLflow release in its own cached virtualenv, for upgrade tests and benchmarks.

``ensure_venv()`` builds ``~/.cache/mlflowops/venvs/mlflow-<version>`` once per machine (a pip
install from the index, a few minutes) and returns its python; later calls return at once. The
build happens in a temporary directory renamed into place, under a lock, so concurrent test runs
neither race nor leave a half-built venv behind.
"""

import fcntl
import os
import shutil
import subprocess
import sys

OLD_VERSION = os.environ.get("MLFLOWOPS_OLD_MLFLOW", "2.12.2")
# Pins from the release's own era so the old server runs as it did then on Python 3.11.
PINS = {
    "2.12.2": ["numpy<2", "pandas<2.3", "pyarrow<16", "sqlalchemy>=2.0,<2.1", "alembic<1.14",
               "Flask<3.1", "Werkzeug<3.1", "protobuf<5", "scikit-learn<1.6", "scipy<1.14",
               "matplotlib<3.10", "setuptools<80"],
}
CACHE_DIR = os.path.join(os.path.expanduser(os.environ.get("MLFLOWOPS_CACHE", "~/.cache/mlflowops")), "venvs")


def venv_dir(version=OLD_VERSION):
    return os.path.join(CACHE_DIR, "mlflow-%s" % version)


def venv_python(version=OLD_VERSION):
    return os.path.join(venv_dir(version), "bin", "python")


def _ready(version):
    return os.path.exists(os.path.join(venv_dir(version), ".complete"))


def ensure_venv(version=OLD_VERSION, base_python=None, timeout=1800):
    """The python of a virtualenv holding ``mlflow==version`` (and psycopg2), built once and cached."""
    if _ready(version):
        return venv_python(version)
    os.makedirs(CACHE_DIR, exist_ok=True)
    with open(os.path.join(CACHE_DIR, ".mlflow-%s.lock" % version), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ready(version):
            return venv_python(version)
        target = venv_dir(version)
        shutil.rmtree(target, ignore_errors=True)
        # venvs are not relocatable: build at the final path, mark complete last.
        base = base_python or getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", target], check=True, capture_output=True, text=True)
        python = venv_python(version)
        argv = [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
                "mlflow==%s" % version, "psycopg2-binary"] + PINS.get(version, [])
        try:
            subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise RuntimeError("installing mlflow %s failed:\n%s" % (version, exc.stderr[-3000:]))
        with open(os.path.join(target, ".complete"), "w") as handle:
            handle.write(version + "\n")
    return venv_python(version)


if __name__ == "__main__":
    print(ensure_venv(sys.argv[1] if len(sys.argv) > 1 else OLD_VERSION))
