# -*- coding: utf-8 -*-
"""Benchmark: playbooks/site.yml over N simulated SSH hosts (tests/harness/fleet.py), first run and unchanged run.

    .venv/bin/python bench/bench_fleet.py [--hosts 10,25,50] [--forks 25] [--servers 3]

For each fleet size: starts N hosts, each with its own sshd on its own loopback port and its own SQLite backend
store (a copy of a fresh MLflow schema), all sharing one backup directory (per-host namespaces); the hosts'
tracking URIs point at --servers shared MLflow servers (one server per host would need ~200 MB each).
Runs site.yml with --forks and SSH pipelining twice: the first run backs every store up, the second finds
nothing changed. Reports wall time and per-host amortised time of both runs, and the changed count of the
second run (target 0). Needs root (sshd, authorized_keys). The last line of the output is one JSON object.
Targets: unchanged run <= 1.5 s per host, <= half the first run, close to linear from 10 to 50 hosts.

On a shared machine wall times follow the load (reported as ``load1``, the 1-minute load average at the start
of each run). The CPU seconds per host do not: ``*_controller_cpu_per_host_s`` (ansible-playbook and its
workers) and ``*_hosts_cpu_per_host_s`` (everything the hosts' sshd ran: sessions, the modules' Pythons).
Their sum over the core count is the wall time per host on an otherwise idle machine.
"""

import argparse
import json
import os
import re
import resource
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

# pylint: disable=wrong-import-position
from harness.fleet import Fleet  # noqa: E402
from harness.runner import run_playbook  # noqa: E402
from harness.services import MlflowServer  # noqa: E402


def recap_changed(stdout):
    total = 0
    for line in stdout.split("PLAY RECAP")[-1].splitlines():
        match = re.search(r"changed=(\d+)", line)
        if match:
            total += int(match.group(1))
    return total


def hosts_cpu_s(fleet):
    """CPU seconds of every process under the hosts' sshd daemons (live ones and those they reaped)."""
    tick = float(os.sysconf("SC_CLK_TCK"))
    stats = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # ppid, utime + stime + cutime + cstime (the reaped children)
        stats[int(pid)] = (int(fields[1]), sum(int(value) for value in fields[11:15]))
    roots = set(host.sshd.pid for host in fleet.hosts)
    total = 0
    for pid, (_parent, ticks) in stats.items():
        ancestor = pid
        while ancestor in stats and ancestor not in roots and ancestor > 1:
            ancestor = stats[ancestor][0]
        if ancestor in roots:
            total += ticks
    return total / tick


def one_size(size, forks, servers, schema_db):
    fleet = Fleet(size, mlflow=False).start()
    try:
        backup_dest = os.path.join(fleet.root, "shared-backups")
        host_vars = {}
        for index, host in enumerate(fleet.hosts):
            store = os.path.join(host.root, "mlflow.db")
            shutil.copyfile(schema_db, store)
            host_vars[host.name] = dict(mlflow_tracking_uri=servers[index % len(servers)].url,
                                        mlflow_backend_store_uri="sqlite:///" + store)
        inventory = fleet.write_inventory(host_vars=host_vars, pipelining=True, group_vars={
            "backup_dest": backup_dest, "health_check_resources": False, "cleanup_gc": True})
        figures = dict(hosts=size, forks=forks)
        for label in ("first", "unchanged"):
            figures["%s_load1" % label] = round(os.getloadavg()[0], 2)
            controller_before, hosts_before = resource.getrusage(resource.RUSAGE_CHILDREN), hosts_cpu_s(fleet)
            started = time.monotonic()
            run = run_playbook(os.path.join(REPO, "playbooks", "site.yml"), inventory=inventory, forks=forks,
                               timeout=3600)
            wall = time.monotonic() - started
            controller_after, hosts_after = resource.getrusage(resource.RUSAGE_CHILDREN), hosts_cpu_s(fleet)
            controller = (controller_after.ru_utime - controller_before.ru_utime
                          + controller_after.ru_stime - controller_before.ru_stime)
            figures["%s_controller_cpu_per_host_s" % label] = round(controller / size, 3)
            figures["%s_hosts_cpu_per_host_s" % label] = round((hosts_after - hosts_before) / size, 3)
            # The wall time per host this CPU would take on an otherwise idle machine with os.cpu_count() cores.
            figures["%s_idle_estimate_per_host_s" % label] = round(
                (controller + hosts_after - hosts_before) / size / (os.cpu_count() or 1), 3)
            figures["%s_tasks_per_host" % label] = len([r for r in run.records if r["host"] == fleet.hosts[0].name])
            if run.rc != 0:
                raise SystemExit("site.yml failed on %d hosts (%s run):\n%s" % (size, label, run.stdout[-3000:]))
            figures["%s_s" % label] = round(wall, 2)
            figures["%s_per_host_s" % label] = round(wall / size, 3)
            figures["%s_changed" % label] = recap_changed(run.stdout)
        figures["unchanged_over_first"] = round(figures["unchanged_s"] / figures["first_s"], 3)
        print("  %3d hosts: first %.1f s (%.2f s/host), unchanged %.1f s (%.2f s/host, changed=%d, "
              "CPU/host %.2f s controller + %.2f s hosts, load %.1f)" % (
                  size, figures["first_s"], figures["first_per_host_s"], figures["unchanged_s"],
                  figures["unchanged_per_host_s"], figures["unchanged_changed"],
                  figures["unchanged_controller_cpu_per_host_s"], figures["unchanged_hosts_cpu_per_host_s"],
                  figures["unchanged_load1"]), flush=True)
        return figures
    finally:
        fleet.stop()
        shutil.rmtree(fleet.root, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="10,25,50", help="comma-separated fleet sizes")
    parser.add_argument("--forks", type=int, default=25)
    parser.add_argument("--servers", type=int, default=3, help="shared MLflow servers the hosts point at")
    args = parser.parse_args()
    sizes = [int(item) for item in args.hosts.split(",") if item.strip()]
    servers = [MlflowServer().start() for _index in range(max(1, args.servers))]
    try:
        results = [one_size(size, args.forks, servers, servers[0].sqlite_path) for size in sizes]
    finally:
        for server in servers:
            server.stop()
    summary = dict(benchmark="fleet_site", forks=args.forks, servers=len(servers), results=results)
    if len(results) >= 2 and results[0]["hosts"] != results[-1]["hosts"]:
        first, last = results[0], results[-1]
        # 1.0 = perfectly linear growth of the unchanged run's wall time with the host count.
        summary["unchanged_growth_vs_linear"] = round(
            (last["unchanged_s"] / first["unchanged_s"]) / (float(last["hosts"]) / first["hosts"]), 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
