# -*- coding: utf-8 -*-
"""The roles over real SSH against a simulated fleet (tests/harness/fleet.py): one sshd and one MLflow server
per host, all hosts sharing one backup directory; then the fleet report from those hosts.

One fleet for the whole module (4 hosts), started once: the tests run in file order and build on each other's
state (site runs, then the report over what they left)."""

import glob
import json
import os
import shutil
import subprocess

import pytest

from harness.fleet import BECOME_USER, Fleet
from harness.runner import REPO_ROOT, run_playbook
from harness.services import api

PLAYBOOKS = os.path.join(REPO_ROOT, "playbooks")
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the fleet harness needs root")
    started = Fleet(4, root=str(tmp_path_factory.mktemp("fleet")), become=True).start()
    started.backup_dest = os.path.join(started.root, "shared-backups")
    yield started
    started.stop()


def _site(fleet, **extra):
    inventory = fleet.write_inventory(group_vars={"backup_dest": fleet.backup_dest, "backup_retention": {"keep_last": 1},
                                                  "health_check_resources": False})
    run = run_playbook(os.path.join(PLAYBOOKS, "site.yml"), inventory=inventory, forks=4, timeout=600, **extra)
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-3000:]
    return run


def _backups(directory):
    """The complete backups in a directory, seen independently of the modules: a data file with its manifest."""
    found = set()
    for manifest in glob.glob(os.path.join(directory, "*.manifest.json")):
        data = manifest[:-len(".manifest.json")]
        if os.path.exists(data):
            found.add(os.path.basename(data))
    return found


def test_site_over_ssh_keeps_each_hosts_backups_under_its_own_name(fleet):
    first = _site(fleet)
    recap = first.recap()
    assert sorted(recap) == [host.name for host in fleet.hosts], first.stdout[-2000:]
    # Only the hosts' own directories in the shared destination, each with exactly its own backup.
    assert sorted(os.listdir(fleet.backup_dest)) == [host.name for host in fleet.hosts]
    before = {}
    for host in fleet.hosts:
        backups = _backups(os.path.join(fleet.backup_dest, host.name))
        assert len(backups) == 1, (host.name, os.listdir(os.path.join(fleet.backup_dest, host.name)))
        before[host.name] = backups
        with open(os.path.join(fleet.backup_dest, host.name, sorted(backups)[0] + ".manifest.json")) as handle:
            assert host.mlflow.sqlite_path in json.dumps(json.load(handle))

    # Two hosts' stores change; with keep_last 1 they replace their own backup and touch nobody else's.
    changed_hosts = fleet.hosts[:2]
    for host in changed_hosts:
        api(host.tracking_uri, "experiments/create", {"name": "fleet-change-" + host.name})
    second = _site(fleet)
    for host in fleet.hosts:
        now = _backups(os.path.join(fleet.backup_dest, host.name))
        if host in changed_hosts:
            assert len(now) == 1 and now != before[host.name], (host.name, now, before[host.name])
        else:
            assert now == before[host.name], (host.name, now, before[host.name])
    assert sorted(os.listdir(fleet.backup_dest)) == [host.name for host in fleet.hosts]
    assert any(record["result"].get("pruned") for record in second.records if record["action"].endswith("db_backup"))

    third = _site(fleet)
    recap = third.recap()
    assert sorted(recap) == [host.name for host in fleet.hosts]
    assert all(counts["changed"] == 0 and counts["failed"] == 0 for counts in recap.values()), third.stdout[-3000:]


def test_an_unprivileged_user_with_become_backs_up_over_ssh(fleet):
    inventory = fleet.write_inventory(user=BECOME_USER, become=True, hosts=fleet.hosts[:1],
                                      group_vars={"backup_dest": os.path.join(fleet.root, "become-backups")})
    run = run_playbook(os.path.join(PLAYBOOKS, "backup.yml"), inventory=inventory, timeout=300)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-3000:]
    host = fleet.hosts[0]
    directory = os.path.join(fleet.root, "become-backups", host.name)
    backups = _backups(directory)
    assert len(backups) == 1
    # Written by root through sudo (not by the SSH user), private.
    stat = os.stat(os.path.join(directory, sorted(backups)[0]))
    assert stat.st_uid == 0 and stat.st_mode & 0o077 == 0
    assert os.stat(directory).st_mode & 0o077 == 0
    # The connection really was the unprivileged user's.
    assert fleet.ssh(host, "id -un", user=BECOME_USER).stdout.strip() == BECOME_USER


def _png_pixels(path):
    # Pillow comes with mlflow.
    from PIL import Image  # pylint: disable=import-outside-toplevel
    with Image.open(path) as image:
        return image.convert("RGB")


def test_fleet_report_lists_every_host_and_renders_its_charts_in_chromium(fleet, tmp_path):
    if not all(_backups(os.path.join(fleet.backup_dest, item.name)) for item in fleet.hosts):
        inventory = fleet.write_inventory(group_vars={"backup_dest": fleet.backup_dest})
        backup = run_playbook(os.path.join(PLAYBOOKS, "backup.yml"), inventory=inventory, forks=4, timeout=600)
        assert backup.rc == 0, backup.stdout[-3000:]  # run on its own (-k): the backups the report lists
    # Runs in every lifecycle stage on one host, as the report must count them.
    host = fleet.hosts[0]
    experiment = api(host.tracking_uri, "experiments/create", {"name": "report-runs"})["experiment_id"]
    run_ids = [api(host.tracking_uri, "runs/create", {"experiment_id": experiment})["run"]["info"]["run_id"]
               for _index in range(3)]
    api(host.tracking_uri, "runs/update", {"run_id": run_ids[0], "status": "FAILED"})
    api(host.tracking_uri, "runs/delete", {"run_id": run_ids[1]})
    report_dest = str(tmp_path / "reports")
    inventory = fleet.write_inventory(group_vars={"backup_dest": fleet.backup_dest, "report_dest": report_dest})
    # Host 4's server is down: it must still be listed, unhealthy.
    fleet.hosts[3].mlflow.stop()
    try:
        run = run_playbook(os.path.join(PLAYBOOKS, "report.yml"), inventory=inventory, timeout=300)
    finally:
        fleet.hosts[3].mlflow.start()
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-3000:]
    assert "# MLflow fleet report" in run.stdout and "report.html" in run.stdout

    with open(os.path.join(report_dest, "report.json")) as handle:
        report = json.load(handle)
    rows = {row["host"]: row for row in report["hosts"]}
    assert sorted(rows) == [item.name for item in fleet.hosts]
    for item in fleet.hosts:
        row = rows[item.name]
        # Independently of the modules: the newest backup on disk and the SQLite file's size.
        on_disk = sorted(_backups(os.path.join(fleet.backup_dest, item.name)))
        assert row["backup"]["name"] == on_disk[-1], (row, on_disk)
        assert row["backup"]["status"] == "complete" and row["backup_ok"] is True
        if item is not fleet.hosts[3]:
            assert row["engine"] == "sqlite" and row["healthy"] is True
            assert row["store_size_bytes"] >= os.path.getsize(item.mlflow.sqlite_path)
    assert rows[host.name]["healthy"] is True
    assert rows[host.name]["runs"]["by_stage"] == {"active": 2, "deleted": 1}
    assert rows[host.name]["runs"]["by_status"]["FAILED"] == 1
    assert rows[host.name]["runs"]["by_status"]["RUNNING"] == 2
    assert rows[fleet.hosts[1].name]["runs"]["total"] == 0
    down = rows[fleet.hosts[3].name]
    assert down["healthy"] is False and down["runs"] is None
    assert any(error.startswith("store:") for error in down["errors"]), down
    assert report["summary"]["unhealthy"] == [fleet.hosts[3].name]
    assert report["trend"] is None

    # A second report compares with the first and keeps both dated JSON copies.
    second = run_playbook(os.path.join(PLAYBOOKS, "report.yml"), inventory=inventory, timeout=300)
    assert second.rc == 0, second.stdout[-3000:] + second.stderr[-3000:]
    with open(os.path.join(report_dest, "report.json")) as handle:
        report = json.load(handle)
    assert report["trend"]["previous_generated_at"] is not None
    assert set(report["trend"]["hosts"]) == {item.name for item in fleet.hosts}
    history = os.listdir(os.path.join(report_dest, "history"))
    assert len([name for name in history if name.endswith(".json")]) >= 1
    page = os.path.join(report_dest, "report.html")
    with open(page) as handle:
        text = handle.read()
    assert "<script" not in text.lower() and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert text.count("<svg") == 4

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (scripts/bootstrap.sh installs it)")
    shot = str(tmp_path / "report.png")
    profile = str(tmp_path / "chromium-profile")
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           "--user-data-dir=" + profile, "--screenshot=" + shot, "--window-size=1200,2000",
                           "file://" + page], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and os.path.exists(shot), done.stderr[-2000:]
    image = _png_pixels(shot)
    width, height = image.size
    assert (width, height) == (1200, 2000)
    # The charts' bars are saturated colours; count them in the chart area (below the heading).
    colours = {(0x15, 0x65, 0xc0): 0, (0x2e, 0x7d, 0x32): 0, (0xef, 0x6c, 0x00): 0}
    for y in range(60, 900, 2):
        for x in range(0, width, 2):
            pixel = image.getpixel((x, y))
            if pixel in colours:
                colours[pixel] += 1
    assert all(count > 20 for count in colours.values()), colours


def test_report_through_ansible_runner_as_awx_runs_it_no_warning_no_secret(fleet, tmp_path):
    """AWX's engine: inventory and extra vars as files in a private data dir per job; the job events and the
    artifacts hold no secret and no warning, in check mode and for real."""
    import ansible_runner  # pylint: disable=import-outside-toplevel
    from harness.runner import ansible_env  # pylint: disable=import-outside-toplevel
    secret = "awx-secret-%s" % os.urandom(6).hex()
    env = ansible_env()
    inventory = fleet.write_inventory(hosts=fleet.hosts[:2])
    for check in (True, False):
        private = tmp_path / ("job-check" if check else "job-run")
        (private / "inventory").mkdir(parents=True)
        (private / "env").mkdir()
        shutil.copyfile(inventory, str(private / "inventory" / "hosts.yml"))
        (private / "env" / "extravars").write_text(json.dumps({
            "mlflow_password": secret, "mlflow_username": "awx", "report_dest": str(tmp_path / "reports"),
            "backup_dest": fleet.backup_dest}))
        (private / "env" / "envvars").write_text(json.dumps({key: env[key] for key in (
            "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_LOCALHOST_WARNING", "ANSIBLE_INVENTORY_UNPARSED_WARNING",
            "ANSIBLE_DEPRECATION_WARNINGS", "ANSIBLE_RETRY_FILES_ENABLED", "PATH")}))
        runner = ansible_runner.run(private_data_dir=str(private), playbook=os.path.join(PLAYBOOKS, "report.yml"),
                                    cmdline="--check" if check else None, quiet=True, timeout=300)
        assert runner.rc == 0 and runner.status == "successful", runner.stdout.read()[-3000:]
        events = list(runner.events)
        assert any(event.get("event") == "playbook_on_stats" for event in events)
        written = [event for event in events if event.get("event") == "runner_on_ok"
                   and event["event_data"].get("task_action", "").endswith("fleet_report")]
        assert len(written) == 1, "the report is written once per play"
        assert os.path.exists(str(tmp_path / "reports" / "report.html")) is not check
        text = json.dumps(events)
        assert "[WARNING]" not in text, [event.get("stdout") for event in events if "[WARNING]" in event.get("stdout", "")]
        # No secret anywhere the runner kept: events, stdout, the job's files.
        for root, _dirs, files in os.walk(str(private / "artifacts")):
            for name in files:
                with open(os.path.join(root, name), errors="replace") as handle:
                    assert secret not in handle.read(), os.path.join(root, name)
    for name in ("report.json", "report.md", "report.html"):
        with open(str(tmp_path / "reports" / name)) as handle:
            assert secret not in handle.read()
