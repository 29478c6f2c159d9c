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


def copy_venv(version, target):
    """A private copy of the cached venv at ``target`` (tests upgrade it in place; the cache stays old).

    The copy's console scripts (pip, mlflow) get their shebangs pointed at the copy's python.
    """
    source = venv_dir(version)
    ensure_venv(version)
    # Hard links: instant, and safe because pip replaces files (stash by rename, write new inodes)
    # rather than rewriting them in place; the shebang rewrite below unlinks before writing.
    subprocess.run(["cp", "-al", source, target], check=True)
    old_prefix = ("#!" + source + "/bin/").encode()
    new_prefix = ("#!" + target + "/bin/").encode()
    bindir = os.path.join(target, "bin")
    for name in os.listdir(bindir):
        path = os.path.join(bindir, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as handle:
            data = handle.read()
        if data.startswith(old_prefix):
            os.unlink(path)
            with open(path, "wb") as handle:
                handle.write(new_prefix + data[len(old_prefix):])
            os.chmod(path, 0o755)
    return os.path.join(target, "bin", "python")


# ---------------------------------------------------------------------------------------------
# A stand-in for a service manager, driven by the upgrade role's command-based service step:
#   python old_mlflow.py service start|stop --dir DIR --python PY --backend-store-uri URI --port P


def _service(argv):
    import argparse  # pylint: disable=import-outside-toplevel
    import json  # pylint: disable=import-outside-toplevel
    import signal  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(prog="old_mlflow.py service")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--python")
    parser.add_argument("--backend-store-uri")
    parser.add_argument("--artifacts-destination")
    parser.add_argument("--port", type=int)
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument("--events", help="append one JSON line per stop/start (action, at, pid) to this file")
    args = parser.parse_args(argv)
    pidfile = os.path.join(args.dir, "server.pid")

    def event(action, pid):
        if args.events:
            with open(args.events, "a") as handle:
                handle.write(json.dumps(dict(action=action, at=time.time(), pid=pid, dir=args.dir)) + "\n")

    if args.action == "stop":
        try:
            with open(pidfile) as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            print(json.dumps(dict(stopped=False, reason="not running")))
            return 0
        try:
            os.killpg(pid, signal.SIGTERM)
            for _i in range(150):
                time.sleep(0.1)
                os.killpg(pid, 0)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.remove(pidfile)
        event("stopped", pid)
        print(json.dumps(dict(stopped=True, pid=pid)))
        return 0
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PYTHONPATH", None)
    log = open(os.path.join(args.dir, "server.log"), "ab")  # pylint: disable=consider-using-with
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        [args.python, "-m", "mlflow", "server", "--backend-store-uri", args.backend_store_uri,
         "--artifacts-destination", args.artifacts_destination, "--host", "127.0.0.1", "--port", str(args.port),
         "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        cwd=args.dir, start_new_session=True)
    log.close()
    with open(pidfile, "w") as handle:
        handle.write(str(process.pid))
    event("started", process.pid)
    # Like systemctl start: return once the process runs; the role waits for health itself.
    # A server that dies at once (for example on a schema it does not accept) is a failed start.
    deadline = time.monotonic() + min(args.timeout, 3.0)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print(json.dumps(dict(started=False, returncode=process.returncode)))
            return 1
        time.sleep(0.2)
    print(json.dumps(dict(started=True, pid=process.pid)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "service":
        sys.exit(_service(sys.argv[2:]))
    print(ensure_venv(sys.argv[1] if len(sys.argv) > 1 else OLD_VERSION))
