# -*- coding: utf-8 -*-
"""A fleet of simulated hosts for tests and benchmarks: one sshd per host on its own loopback port.

Each host has its own ``sshd`` (own port, so Ansible's SSH multiplexing treats the hosts as different
machines), its own MLflow tracking server (SQLite store and local artifacts, optional) and its own
directory. The fleet generates an ed25519 client key and host keys in its temporary directory, adds the
client key to ``/root/.ssh/authorized_keys`` (and to the unprivileged test user's, with ``become=True``)
and removes exactly those lines again at ``stop()`` (also registered with atexit).

    with Fleet(3) as fleet:
        inventory = fleet.write_inventory()
        run_playbook(site, inventory=inventory)

The unprivileged user (``mlflowops-test``) is created when missing; its NOPASSWD sudo rule lives in a
file under /etc/sudoers.d that ``stop()`` removes. Must run as root.
"""

import atexit
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from harness.services import MlflowServer, free_port, wait_until

SSHD = "/usr/sbin/sshd"
BECOME_USER = "mlflowops-test"
SUDOERS_DIR = "/etc/sudoers.d"
_LOCK = threading.Lock()
_LIVE = []


def _stop_all():
    for fleet in list(_LIVE):
        with contextlib.suppress(Exception):
            fleet.stop()


atexit.register(_stop_all)


def _run(argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120, **kwargs)


def _add_line(path, line, owner=None):
    """Append ``line`` to an authorized_keys file (created 0600 in a 0700 directory when missing)."""
    with _LOCK:
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700)
            if owner:
                os.chown(directory, owner.pw_uid, owner.pw_gid)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(line.rstrip("\n") + "\n")
        if owner:
            os.chown(path, owner.pw_uid, owner.pw_gid)


def _remove_line(path, line):
    """Remove exactly ``line`` from the file, keeping everything else (rewritten through a temp + rename)."""
    with _LOCK:
        try:
            with open(path) as handle:
                lines = handle.readlines()
        except FileNotFoundError:
            return
        kept = [item for item in lines if item.rstrip("\n") != line.rstrip("\n")]
        if len(kept) == len(lines):
            return
        stat = os.stat(path)
        tmp = "%s.mlflowops-%d" % (path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.writelines(kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.chown(tmp, stat.st_uid, stat.st_gid)
        os.replace(tmp, path)


class FleetHost:
    """One simulated host: its name, sshd port, directory and (optionally) MLflow server."""

    def __init__(self, name, root):
        self.name = name
        self.root = root
        self.port = free_port()
        self.sshd = None
        self.mlflow = None
        self.old_mlflow = None  # harness.standin.StandIn (+ venv, db_path), from Fleet.start_old_mlflow()
        self.host_key = os.path.join(root, "ssh_host_ed25519_key")
        self.pid_file = os.path.join(root, "sshd.pid")
        self.config = os.path.join(root, "sshd_config")
        self.log_path = os.path.join(root, "sshd.log")

    @property
    def tracking_uri(self):
        return self.mlflow.url if self.mlflow else None

    @property
    def backend_store_uri(self):
        return self.mlflow.backend_store_uri if self.mlflow else None

    @property
    def artifacts_destination(self):
        return self.mlflow.artifacts_destination if self.mlflow else None

    def host_vars(self):
        # Simulated hosts share one filesystem: per-host paths that would be fixed on real machines.
        values = {"ansible_host": "127.0.0.1", "ansible_port": self.port, "fleet_root": self.root,
                  "cleanup_state_file": os.path.join(self.root, "state", "cleanup-state.json")}
        if self.mlflow:
            values.update(mlflow_tracking_uri=self.tracking_uri, mlflow_backend_store_uri=self.backend_store_uri,
                          mlflow_artifacts_destination=self.artifacts_destination)
        if self.old_mlflow:
            old = self.old_mlflow
            values.update(mlflow_tracking_uri=old.url, mlflow_backend_store_uri=old.backend_store_uri,
                          mlflow_artifacts_destination=os.path.join(old.root, "artifacts"),
                          mlflow_service_manager="command", mlflow_service_stop_command=old.stop_command,
                          mlflow_service_start_command=old.start_command, upgrade_venv=old.venv)
        return values


class Fleet:
    """N simulated hosts over SSH on loopback, each with its own sshd and (with ``mlflow=True``) MLflow server."""

    def __init__(self, size, root=None, prefix="host", mlflow=True, become=False, max_startups=100):
        if os.geteuid() != 0:
            raise RuntimeError("the fleet harness needs root (sshd, authorized_keys, sudoers)")
        if not os.path.exists(SSHD):
            raise RuntimeError("sshd is missing: apt-get install -y openssh-server")
        self.size = size
        self.root = root or tempfile.mkdtemp(prefix="mlflowops-fleet-")
        os.chmod(self.root, 0o755)
        self.prefix = prefix
        self.with_mlflow = mlflow
        self.become = become
        self.max_startups = max_startups
        self.token = secrets.token_hex(6)
        self.key = os.path.join(self.root, "id_ed25519")
        self.hosts = []
        self._key_line = None
        self._key_files = []
        self._sudoers = None
        self.started = False

    # ----------------------------------------------------------------------------------------- lifecycle
    def start(self):
        _LIVE.append(self)
        try:
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mlflowops-fleet-" + self.token, "-f", self.key])
            with open(self.key + ".pub") as handle:
                self._key_line = handle.read().strip()
            root_keys = os.path.join(pwd.getpwuid(0).pw_dir, ".ssh", "authorized_keys")
            _add_line(root_keys, self._key_line)
            self._key_files.append(root_keys)
            if self.become:
                self._prepare_become_user()
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
            for index in range(1, self.size + 1):
                name = "%s%02d" % (self.prefix, index)
                directory = os.path.join(self.root, name)
                os.makedirs(directory, mode=0o755)
                self.hosts.append(FleetHost(name, directory))
            workers = min(8, max(1, self.size))
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(self._start_sshd, self.hosts))
            if self.with_mlflow:
                # MLflow servers start slowly (imports); a few at a time keeps a 2-core machine responsive.
                with ThreadPoolExecutor(min(4, self.size)) as pool:
                    list(pool.map(self._start_mlflow, self.hosts))
            self.started = True
            return self
        except BaseException:
            self.stop()
            raise

    def _start_sshd(self, host):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", host.host_key])
        with open(host.config, "w") as handle:
            handle.write("\n".join([
                "Port %d" % host.port,
                "ListenAddress 127.0.0.1",
                "HostKey %s" % host.host_key,
                "PidFile %s" % host.pid_file,
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "AuthorizedKeysFile .ssh/authorized_keys",
                "MaxStartups %d" % self.max_startups,
                "MaxSessions %d" % self.max_startups,
                "LogLevel ERROR",
                "PrintMotd no",
                "UseDNS no",
                "Subsystem sftp internal-sftp",
                "",
            ]))
        log = open(host.log_path, "ab")  # pylint: disable=consider-using-with
        host.sshd = subprocess.Popen(  # pylint: disable=consider-using-with
            [SSHD, "-D", "-e", "-f", host.config], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        wait_until(lambda: self._ssh_ok(host, "root"), 60, "sshd of %s" % host.name, host.sshd, host.log_path)

    def _ssh_ok(self, host, user):
        done = subprocess.run(["ssh"] + self.ssh_args(host, user) + ["true"], capture_output=True, timeout=30, check=False)
        return done.returncode == 0

    def ssh_args(self, host, user="root"):
        return ["-i", self.key, "-p", str(host.port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                "%s@127.0.0.1" % user]

    def ssh(self, host, command, user="root"):
        """Run a shell command on a host over its sshd; returns the CompletedProcess."""
        return subprocess.run(["ssh"] + self.ssh_args(host, user) + [command], capture_output=True, text=True,
                              timeout=120, check=False)

    def _start_mlflow(self, host):
        host.mlflow = MlflowServer(root=os.path.join(host.root, "mlflow"))
        os.makedirs(host.mlflow.root, exist_ok=True)
        host.mlflow.start()

    def start_old_mlflow(self, hosts=None, version=None):
        """Give each host (default: all) an older MLflow server under ``<host root>/old-mlflow``: a private copy
        of the cached venv (``.venv``), a SQLite store (``.db_path``), started and stopped by commands
        (harness.standin.StandIn, as the roles do with mlflow_service_manager=command). Its connection,
        service and ``upgrade_venv`` variables join the host's inventory variables."""
        # pylint: disable=import-outside-toplevel
        from harness.old_mlflow import OLD_VERSION, copy_venv, ensure_venv
        from harness.standin import StandIn
        version = version or OLD_VERSION
        ensure_venv(version)
        targets = list(hosts or self.hosts)

        def start(host):
            root = os.path.join(host.root, "old-mlflow")
            os.makedirs(root, mode=0o755)
            venv = os.path.join(root, "venv")
            db_path = os.path.join(root, "mlflow.db")
            service = StandIn(root, copy_venv(version, venv), "sqlite:///%s" % db_path)
            service.venv, service.db_path = venv, db_path
            host.old_mlflow = service
            service.start()

        with ThreadPoolExecutor(min(4, max(1, len(targets)))) as pool:
            list(pool.map(start, targets))
        return targets

    def _prepare_become_user(self):
        try:
            pwd.getpwnam(BECOME_USER)
        except KeyError:
            _run(["useradd", "--create-home", "--shell", "/bin/sh", BECOME_USER])
        # A locked password ("!") makes sshd without PAM refuse even key logins; "*" is no password, not locked.
        _run(["usermod", "-p", "*", BECOME_USER])
        if not shutil.which("sudo"):
            raise RuntimeError("sudo is missing: apt-get install -y sudo (scripts/bootstrap.sh does)")
        user = pwd.getpwnam(BECOME_USER)
        keys = os.path.join(user.pw_dir, ".ssh", "authorized_keys")
        _add_line(keys, self._key_line, owner=user)
        self._key_files.append(keys)
        # sudo ignores files in sudoers.d whose names contain a dot.
        path = os.path.join(SUDOERS_DIR, "mlflowops-fleet-" + self.token)
        tmp = path + "~tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o440)
        with os.fdopen(fd, "w") as handle:
            handle.write("%s ALL=(ALL) NOPASSWD: ALL\n" % BECOME_USER)
        _run(["visudo", "-c", "-q", "-f", tmp])
        os.replace(tmp, path)
        self._sudoers = path

    def stop(self):
        for host in self.hosts:
            if host.old_mlflow:
                with contextlib.suppress(Exception):
                    host.old_mlflow.stop()
            if host.mlflow:
                with contextlib.suppress(Exception):
                    host.mlflow.stop()
            if host.sshd and host.sshd.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(host.sshd.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.sshd.wait(10)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(host.sshd.pid, signal.SIGKILL)
        if self._key_line:
            for path in self._key_files:
                with contextlib.suppress(OSError):
                    _remove_line(path, self._key_line)
            self._key_files = []
        if self._sudoers:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._sudoers)
            self._sudoers = None
        if self in _LIVE:
            _LIVE.remove(self)
        self.started = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ----------------------------------------------------------------------------------------- inventory
    def inventory(self, user="root", become=False, group="mlflow", host_vars=None, group_vars=None, hosts=None,
                  pipelining=True):
        """The inventory as a dict (Ansible's YAML inventory format)."""
        common = {
            "ansible_user": user,
            "ansible_ssh_private_key_file": self.key,
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            # Interpreter discovery trips over pyenv shims on these machines: name the venv's python.
            "ansible_python_interpreter": sys.executable,
            "ansible_ssh_pipelining": pipelining,
        }
        if become:
            common.update(ansible_become=True, ansible_become_method="sudo", ansible_become_user="root")
        common.update(group_vars or {})
        members = {}
        for host in hosts or self.hosts:
            values = host.host_vars()
            values.update((host_vars or {}).get(host.name, {}))
            members[host.name] = values
        return {"all": {"children": {group: {"hosts": members, "vars": common}}}}

    def write_inventory(self, path=None, **kwargs):
        path = path or os.path.join(self.root, "inventory-%s.yml" % secrets.token_hex(3))
        with open(path, "w") as handle:
            json.dump(self.inventory(**kwargs), handle, indent=1)  # JSON is YAML
        return path


def wait_for_ssh(fleet, user="root", timeout=60):
    """Every host answers over SSH as ``user``."""
    deadline = time.monotonic() + timeout
    for host in fleet.hosts:
        while not fleet._ssh_ok(host, user):  # pylint: disable=protected-access
            if time.monotonic() > deadline:
                raise RuntimeError("%s does not answer over SSH as %s" % (host.name, user))
            time.sleep(0.5)
