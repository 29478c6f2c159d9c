# -*- coding: utf-8 -*-
"""Issue 9 (backups): store identity, restores that keep owner and mode, odd SQLite paths, refusals, leftovers.

Every module task of the SQLite scenarios runs in one playbook (a module-scoped fixture); each test asserts
on the real files afterwards: what the stores hold, their owner and mode, what the directories contain.
"""

import grp
import hashlib
import json
import os
import pwd
import secrets
import shutil
import sqlite3
import stat

import pytest

from harness.backup_tools import run_tasks

from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri


def make_store(path, runs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE alembic_version (version_num TEXT)")
    conn.execute("INSERT INTO alembic_version VALUES ('rev-trust')")
    conn.execute("CREATE TABLE runs (run_uuid TEXT PRIMARY KEY)")
    conn.executemany("INSERT INTO runs VALUES (?)", [("r%d" % i,) for i in range(runs)])
    conn.commit()
    conn.close()
    return path


def runs(path):
    conn = sqlite3.connect("file:%s?mode=ro" % path.replace("%", "%25").replace("?", "%3f").replace("#", "%23"),
                           uri=True)
    try:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        conn.close()


def add_runs(path, count):
    conn = sqlite3.connect(path)
    conn.executemany("INSERT INTO runs VALUES (?)", [("x%d-%s" % (i, secrets.token_hex(3)),) for i in range(count)])
    conn.commit()
    conn.close()


def uri(path):
    """A sqlite URI for any path: the URI's own special characters escaped."""
    return "sqlite:///" + path.replace("%", "%25").replace("?", "%3F").replace("#", "%23")


def sha(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def fake_backup(dest, name, data_path, identity_of):
    """A backup file with a matching manifest that records ``identity_of``'s store (a crafted, 'valid' backup)."""
    os.makedirs(dest, exist_ok=True)
    path = os.path.join(dest, name)
    shutil.copyfile(data_path, path)
    manifest = dict(format_version=1, file=name, engine="sqlite", format="sqlite", compression="none",
                    external_compression="none", size_bytes=os.path.getsize(path), sha256=sha(path),
                    created_at="2026-01-01T02:00:00.000000Z",
                    store=dict(engine="sqlite", location="sqlite:///" + os.path.realpath(identity_of), prefix="mlflow"))
    with open(path + ".manifest.json", "w") as handle:
        json.dump(manifest, handle)
    return path


@pytest.fixture(scope="module")
def trust(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("trust"))
    o = dict(root=root)
    # two stores sharing one dest (0755 already): prefixes mlflow and mlflow-prod
    o["a"] = make_store(os.path.join(root, "a", "mlflow.db"), 3)
    o["prod"] = make_store(os.path.join(root, "prod", "mlflow.db"), 7)
    o["shared"] = shared = os.path.join(root, "shared")
    os.makedirs(shared)
    os.chmod(shared, 0o755)
    a_args = {"backend_store_uri": uri(o["a"]), "dest": shared, "force": True, "compression": "none",
              "retention": {"keep_last": 2}}
    prod_args = {"backend_store_uri": uri(o["prod"]), "dest": shared, "force": True, "prefix": "mlflow-prod",
                 "retention": {"keep_last": 2}}
    o["new_target"] = os.path.join(root, "new", "mlflow.db")
    os.makedirs(os.path.dirname(o["new_target"]))
    # owner and mode: a nobody:nogroup 0600 store
    o["owned"] = make_store(os.path.join(root, "owned", "mlflow.db"), 4)
    os.chown(o["owned"], pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    os.chmod(o["owned"], 0o600)
    o["owned_dest"] = os.path.join(root, "owned-dest")
    o["moded"] = make_store(os.path.join(root, "moded", "mlflow.db"), 2)
    # a path with ?, #, %41 and a space
    o["odd"] = make_store(os.path.join(root, "a?b#c%41 d", "mlflow.db"), 5)
    o["odd_dest"] = os.path.join(root, "odd?dest#%41")
    # empty and foreign backups that claim to be backups of 'victim'
    o["victim"] = make_store(os.path.join(root, "victim", "mlflow.db"), 6)
    o["victim_sha"] = sha(o["victim"])
    empty = os.path.join(root, "empty.bin")
    open(empty, "wb").close()
    foreign = os.path.join(root, "foreign.db")
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (42)")
    conn.commit()
    conn.close()
    o["foreign"] = foreign
    o["empty_backup"] = fake_backup(os.path.join(root, "crafted"), "mlflow-sqlite-20260101T020000000000Z.db",
                                    empty, o["victim"])
    o["foreign_backup"] = fake_backup(os.path.join(root, "crafted"), "mlflow-sqlite-20260102T020000000000Z.db",
                                      foreign, o["victim"])
    o["zero"] = os.path.join(root, "zero.db")
    open(o["zero"], "wb").close()
    # leftovers of a killed restore next to 'partial' store: one stale, one fresh
    o["partial_store"] = make_store(os.path.join(root, "partial", "mlflow.db"), 1)
    o["stale_temp"] = os.path.join(root, "partial", ".mlflow.db.restore-20200101T000000000000Z.partial")
    o["fresh_temp"] = os.path.join(root, "partial", ".mlflow.db.restore-20990101T000000000000Z.partial")
    for path in (o["stale_temp"], o["fresh_temp"]):
        with open(path, "wb") as handle:
            handle.write(b"x" * 4096)
    os.utime(o["stale_temp"], (1, 1))
    o["dir_target"] = os.path.join(root, "dir-target")
    os.makedirs(o["dir_target"])

    first, _run = run_tasks([
        ("prod1", "db_backup", prod_args), ("prod2", "db_backup", prod_args),
        ("a1", "db_backup", a_args), ("a2", "db_backup", a_args), ("a3", "db_backup", a_args),
        ("prod3", "db_backup", prod_args),
        ("owned_backup", "db_backup", {"backend_store_uri": uri(o["owned"]), "dest": o["owned_dest"]}),
        ("moded_backup", "db_backup", {"backend_store_uri": uri(o["moded"]), "dest": o["owned_dest"],
                                       "prefix": "moded"}),
        ("odd_backup", "db_backup", {"backend_store_uri": uri(o["odd"]), "dest": o["odd_dest"]}),
        ("partial_backup", "db_backup", {"backend_store_uri": uri(o["partial_store"]),
                                         "dest": os.path.join(root, "partial-dest")}),
    ])
    o["first"] = first
    # changes after the backups, so that a restore is visible in the stores
    for name, count in (("a", 10), ("owned", 5), ("odd", 20), ("moded", 1)):
        add_runs(o[name], count)
    o["odd_sha_before"] = sha(o["odd"])
    o["root_before"] = sorted(os.listdir(root))
    prod_file = first["prod3"]["backup"]["path"]
    legacy = first["prod2"]["backup"]["path"]
    with open(legacy + ".manifest.json") as handle:
        manifest = json.load(handle)
    manifest.pop("store")
    with open(legacy + ".manifest.json", "w") as handle:
        json.dump(manifest, handle)
    o["legacy"] = legacy
    second, run = run_tasks([
        ("info", "backup_info", {"path": shared, "prefix": "mlflow"}),
        ("info_prod", "backup_info", {"path": shared, "prefix": "mlflow-prod"}),
        ("restore_dir", "db_restore", {"backend_store_uri": uri(o["a"]), "src": shared, "force": True}),
        ("restore_other_refused", "db_restore", {"backend_store_uri": uri(o["a"]), "src": prod_file,
                                                 "force": True}),
        ("restore_dir_new_refused", "db_restore", {"backend_store_uri": uri(o["new_target"]), "src": shared}),
        ("restore_other_allowed", "db_restore", {"backend_store_uri": uri(o["new_target"]), "src": prod_file,
                                                 "allow_other_store": True}),
        ("legacy_refused", "db_restore", {"backend_store_uri": uri(o["prod"]), "src": legacy, "force": True}),
        ("legacy_check", "db_restore", {"backend_store_uri": uri(o["prod"]), "src": legacy, "force": True,
                                        "allow_other_store": True}, {"check_mode": True}),
        ("owned_restore", "db_restore", {"backend_store_uri": uri(o["owned"]), "src": o["owned_dest"],
                                         "force": True, "keep_previous": False}),
        ("moded_restore", "db_restore", {"backend_store_uri": uri(o["moded"]),
                                         "src": first["moded_backup"]["backup"]["path"], "force": True,
                                         "owner": "nobody", "group": "nogroup", "mode": "0640"}),
        ("odd_refused", "db_restore", {"backend_store_uri": uri(o["odd"]), "src": o["odd_dest"]}),
        ("odd_restored", "db_restore", {"backend_store_uri": uri(o["odd"]), "src": o["odd_dest"], "force": True}),
        ("empty_refused", "db_restore", {"backend_store_uri": uri(o["victim"]), "src": o["empty_backup"],
                                         "force": True}),
        ("foreign_refused", "db_restore", {"backend_store_uri": uri(o["victim"]), "src": o["foreign_backup"],
                                           "force": True}),
        ("foreign_backup_refused", "db_backup", {"backend_store_uri": uri(o["foreign"]),
                                                 "dest": os.path.join(root, "foreign-dest")}),
        ("zero_backup_refused", "db_backup", {"backend_store_uri": uri(o["zero"]),
                                              "dest": os.path.join(root, "zero-dest")}),
        ("zero_optimize_refused", "db_optimize", {"backend_store_uri": uri(o["zero"]), "force": True}),
        ("foreign_optimize_refused", "db_optimize", {"backend_store_uri": uri(o["foreign"]), "force": True}),
        ("partial_check", "db_restore", {"backend_store_uri": uri(o["partial_store"]),
                                         "src": os.path.join(root, "partial-dest"), "force": True},
         {"check_mode": True}),
        ("partial_restore", "db_restore", {"backend_store_uri": uri(o["partial_store"]),
                                           "src": os.path.join(root, "partial-dest"), "force": True}),
        ("dir_target", "db_restore", {"backend_store_uri": uri(o["dir_target"]), "src": o["owned_dest"],
                                      "force": True, "allow_other_store": True}),
        ("foreign_allowed", "db_restore", {"backend_store_uri": uri(o["victim"]), "src": o["foreign_backup"],
                                           "force": True, "allow_non_mlflow": True, "keep_previous": False}),
    ])
    o["results"], o["run"] = second, run
    return o


def test_two_stores_share_a_dest_each_keeps_its_full_retention_set(trust):
    first, results = trust["first"], trust["results"]
    for name in ("prod1", "prod2", "prod3", "a1", "a2", "a3"):
        assert first[name]["_status"] == "ok", first[name]
    a_names = [os.path.basename(first["a%d" % i]["backup"]["path"]) for i in (2, 3)]
    prod_names = [os.path.basename(first["prod%d" % i]["backup"]["path"]) for i in (2, 3)]
    # mlflow's retention never touched mlflow-prod's backups, and the other way round
    assert first["a3"]["pruned"] and all(p["name"].startswith("mlflow-sqlite-") for p in first["a3"]["pruned"])
    assert [p["name"] for p in first["prod3"]["pruned"]] == [os.path.basename(first["prod1"]["backup"]["path"])]
    on_disk = sorted(n for n in os.listdir(trust["shared"]) if not n.startswith(".") and not n.endswith(".json"))
    assert on_disk == sorted(a_names + prod_names)
    info, info_prod = results["info"], results["info_prod"]
    assert sorted(b["name"] for b in info["backups"]) == sorted(a_names)
    assert sorted(b["name"] for b in info_prod["backups"]) == sorted(prod_names)
    store = info["latest"]["store"]
    assert store == {"engine": "sqlite", "location": "sqlite:///" + os.path.realpath(trust["a"]), "prefix": "mlflow"}


def test_restore_from_a_dir_picks_only_the_same_store(trust):
    results = trust["results"]
    restored = results["restore_dir"]
    assert restored["_status"] == "ok", restored
    assert os.path.basename(restored["restored"]["path"]).startswith("mlflow-sqlite-")
    assert runs(trust["a"]) == 3, "the store got another store's backup (prod has 7 runs)"
    refused = results["restore_other_refused"]
    assert refused["_status"] == "failed" and "allow_other_store" in refused["msg"], refused
    new = results["restore_dir_new_refused"]
    assert new["_status"] == "failed" and "no complete backup of" in new["msg"] and "allow_other_store" in new["msg"]
    allowed = results["restore_other_allowed"]
    assert allowed["_status"] == "ok" and allowed["other_store"] is True, allowed
    assert runs(trust["new_target"]) == 7
    legacy = results["legacy_refused"]
    assert legacy["_status"] == "failed" and "unknown store" in legacy["msg"], legacy
    assert results["legacy_check"]["_status"] == "ok", results["legacy_check"]
    assert os.path.exists(trust["legacy"]), "a backup without identity was pruned"


def test_restore_keeps_owner_group_and_mode(trust):
    results = trust["results"]
    assert trust["first"]["owned_backup"]["_status"] == "ok", trust["first"]["owned_backup"]
    restored = results["owned_restore"]
    assert restored["_status"] == "ok", restored
    info = os.stat(trust["owned"])
    assert (pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name) == ("nobody", "nogroup")
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert runs(trust["owned"]) == 4
    moded = results["moded_restore"]
    assert moded["_status"] == "ok", moded
    info = os.stat(trust["moded"])
    assert pwd.getpwuid(info.st_uid).pw_name == "nobody" and stat.S_IMODE(info.st_mode) == 0o640
    assert runs(trust["moded"]) == 2


def test_odd_paths_back_up_and_respect_force(trust):
    first, results = trust["first"], trust["results"]
    backup = first["odd_backup"]
    assert backup["_status"] == "ok", backup
    assert backup["backup"]["schema_revision"] == "rev-trust"
    assert stat.S_IMODE(os.stat(backup["backup"]["path"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(trust["odd_dest"]).st_mode) == 0o700
    refused = results["odd_refused"]
    assert refused["_status"] == "failed" and "not empty" in refused["msg"], refused
    restored = results["odd_restored"]
    assert restored["_status"] == "ok", restored
    assert runs(trust["odd"]) == 5
    # nothing was created under a truncated name (the old URI bug opened '<root>/a' and made it a database)
    assert not os.path.exists(os.path.join(trust["root"], "a?b"))
    assert sorted(os.listdir(trust["root"])) == trust["root_before"]


def test_backups_and_manifests_are_private_in_a_0755_dest(trust):
    first = trust["first"]
    for name in ("a3", "prod3"):
        assert stat.S_IMODE(os.stat(first[name]["backup"]["path"]).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(first[name]["backup"]["manifest"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(trust["owned_dest"]).st_mode) == 0o700


def test_empty_and_non_mlflow_content_is_refused(trust):
    results = trust["results"]
    empty, foreign = results["empty_refused"], results["foreign_refused"]
    assert empty["_status"] == "failed" and "empty (0 bytes)" in empty["msg"], empty
    assert foreign["_status"] == "failed" and "not an MLflow store" in foreign["msg"], foreign
    assert "allow_non_mlflow" in foreign["msg"]
    # the refusals left the store alone; only the explicit option restored the foreign file
    allowed = results["foreign_allowed"]
    assert allowed["_status"] == "ok", allowed
    conn = sqlite3.connect(trust["victim"])
    assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
    conn.close()
    refused_backup = results["foreign_backup_refused"]
    assert refused_backup["_status"] == "failed"
    assert "not an MLflow store" in refused_backup["msg"] and "schema revision" in refused_backup["msg"]
    assert results["zero_backup_refused"]["_status"] == "failed"
    assert "empty (0 bytes)" in results["zero_backup_refused"]["msg"]
    for name in ("foreign-dest", "zero-dest"):
        path = os.path.join(trust["root"], name)
        assert not os.path.exists(path) or [n for n in os.listdir(path) if not n.startswith(".")] == []
    zero, foreign_opt = results["zero_optimize_refused"], results["foreign_optimize_refused"]
    assert zero["_status"] == "failed" and "0 bytes" in zero["msg"], zero
    assert os.path.getsize(trust["zero"]) == 0, "db_optimize turned a 0-byte file into a database"
    assert foreign_opt["_status"] == "failed" and "not an MLflow store" in foreign_opt["msg"], foreign_opt


def test_empty_backup_was_refused_before_the_store_changed(trust):
    # the refusals ran before foreign_allowed: their temp copies are gone and no .pre-restore copy was made
    leftovers = [n for n in os.listdir(os.path.dirname(trust["victim"])) if n != "mlflow.db"]
    assert leftovers == [], leftovers


def test_stale_restore_leftovers_are_cleaned_and_reported(trust):
    results = trust["results"]
    check, done = results["partial_check"], results["partial_restore"]
    assert check["_status"] == "ok" and check["removed_partials"] == [trust["stale_temp"]], check
    assert done["_status"] == "ok" and done["removed_partials"] == [trust["stale_temp"]], done
    assert not os.path.exists(trust["stale_temp"])
    assert os.path.exists(trust["fresh_temp"]), "a fresh temp file (maybe a running restore) was removed"


def test_restore_over_a_directory_is_a_clear_error(trust):
    result = trust["results"]["dir_target"]
    assert result["_status"] == "failed"
    assert "is a directory" in result["msg"] and "permission" not in result["msg"].lower(), result["msg"]
    assert os.path.isdir(trust["dir_target"]) and os.listdir(trust["dir_target"]) == []


# ---------------------------------------------------------------------------------------------------
# PostgreSQL: identity without password, private files, non-MLflow refusal, another store refused


def test_postgres_identity_modes_and_refusals(postgres, tmp_path):
    name = "trust_%s" % secrets.token_hex(4)
    uri_a = postgres.create_database(name)
    user = parse_backend_store_uri(uri_a).user
    postgres.psql(
        "SET ROLE \"%s\"; CREATE TABLE runs (run_uuid text PRIMARY KEY);"
        " CREATE TABLE alembic_version (version_num text PRIMARY KEY);"
        " INSERT INTO alembic_version VALUES ('rev-pg'); INSERT INTO runs VALUES ('r1'), ('r2');" % user, name)
    other = "trust_other_%s" % secrets.token_hex(4)
    uri_b = postgres.create_database(other)
    postgres.psql("SET ROLE \"%s\"; CREATE TABLE t (x int); INSERT INTO t VALUES (7);"
                  % parse_backend_store_uri(uri_b).user, other)
    dest = str(tmp_path / "dest")
    os.makedirs(dest)
    os.chmod(dest, 0o755)
    results, run = run_tasks([
        ("backup", "db_backup", {"backend_store_uri": uri_a, "dest": dest}),
        ("dir_backup", "db_backup", {"backend_store_uri": uri_a, "dest": dest, "format": "directory",
                                     "prefix": "dir"}),
        ("foreign", "db_backup", {"backend_store_uri": uri_b, "dest": dest, "prefix": "other"}),
        ("into_other", "db_restore", {"backend_store_uri": uri_b, "src": dest, "force": True}),
    ], verbosity=3)
    backup = results["backup"]
    assert backup["_status"] == "ok", backup
    password = parse_backend_store_uri(uri_a).password
    with open(backup["backup"]["manifest"]) as handle:
        manifest = json.load(handle)
    assert manifest["store"] == {"engine": "postgresql", "prefix": "mlflow",
                                 "location": "postgresql://127.0.0.1:%d/%s" % (postgres.port, name)}
    assert password not in json.dumps(manifest) and password not in run.stdout + run.stderr
    assert stat.S_IMODE(os.stat(backup["backup"]["path"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(backup["backup"]["manifest"]).st_mode) == 0o600
    dir_backup = results["dir_backup"]
    assert dir_backup["_status"] == "ok", dir_backup
    for root, dirs, files in os.walk(dir_backup["backup"]["path"]):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
        for entry in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, entry)).st_mode) == 0o600, entry
    foreign = results["foreign"]
    assert foreign["_status"] == "failed" and "not an MLflow store" in foreign["msg"], foreign
    into_other = results["into_other"]
    assert into_other["_status"] == "failed" and "allow_other_store" in into_other["msg"], into_other
    assert postgres.psql("SELECT x FROM t", other) == "7"
    for database in (name, other):
        postgres.psql('DROP DATABASE "%s" WITH (FORCE)' % database)
