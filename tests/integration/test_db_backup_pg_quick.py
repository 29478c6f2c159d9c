# -*- coding: utf-8 -*-
"""PostgreSQL skip-unchanged: O(1) from the dump snapshot's transaction ids, the exact scan when in doubt."""
import uuid

from ansible_collections.mlflowops.maintenance.plugins.module_utils import postgres_snapshot as pgt
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_backup import BackupOptions, run_backup
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri


def test_quick_fingerprint_then_scan_then_change(postgres, tmp_path):
    name = "quick_%s" % uuid.uuid4().hex[:6]
    store = parse_backend_store_uri(postgres.create_database(name))
    postgres.psql("CREATE TABLE alembic_version (version_num text); INSERT INTO alembic_version VALUES ('q1');"
                  "CREATE TABLE runs (run_uuid text PRIMARY KEY, n int);"
                  "INSERT INTO runs SELECT 'r' || i, i FROM generate_series(1, 500) i;"
                  "ALTER TABLE runs OWNER TO \"%s\"; ALTER TABLE alembic_version OWNER TO \"%s\"" % (store.user, store.user),
                  name)
    postgres.psql("ANALYZE", name)  # so that autovacuum has no analyze (a transaction id) to do during the test
    dest = str(tmp_path / "backups")
    first = run_backup(store, BackupOptions(dest, compression="none", verify="none"))
    assert first["created"] is True

    second = run_backup(store, BackupOptions(dest, compression="none", verify="none"))
    assert second["unchanged"] is True and second["created"] is False

    # with nothing written since, the snapshot alone tells it: no row is read
    manifest_fp = pgt_manifest_fingerprint(first)
    snap = pgt.DumpSnapshot(store, 10, 10, previous=manifest_fp)
    try:
        assert snap.fingerprint_source == "snapshot" and snap.fingerprint == manifest_fp
        assert snap._row_counts is None  # pylint: disable=protected-access
        assert snap.row_counts["runs"] == 500  # counted on demand, in the same snapshot
    finally:
        snap.close()

    # a write in another database moves the transaction ids: in doubt, the exact scan decides (still unchanged)
    postgres.psql("CREATE TABLE IF NOT EXISTS elsewhere (i int); INSERT INTO elsewhere VALUES (1)", "postgres")
    snap = pgt.DumpSnapshot(store, 10, 10, previous=manifest_fp)
    try:
        assert snap.fingerprint_source == "scan" and snap.fingerprint == manifest_fp
    finally:
        snap.close()
    again = run_backup(store, BackupOptions(dest, compression="none", verify="none"))
    assert again["unchanged"] is True

    # a real change is seen
    postgres.psql("UPDATE runs SET n = n + 1 WHERE run_uuid = 'r7'", name)
    changed = run_backup(store, BackupOptions(dest, compression="none", verify="none"))
    assert changed["created"] is True and changed["unchanged"] is False


def pgt_manifest_fingerprint(result):
    import json  # pylint: disable=import-outside-toplevel
    with open(result["backup"]["manifest"]) as handle:
        fingerprint = json.load(handle)["fingerprint"]
    assert fingerprint["method"] == "postgresql-count-xmin" and fingerprint["snapshot"]
    return fingerprint


def test_quick_fingerprint_is_pure_and_sensitive():
    base = pgt.quick_fingerprint("10:12:11", "2026-01-01", "16384", ["runs", "alembic_version"], "r1")
    assert base == pgt.quick_fingerprint("10:12:11", "2026-01-01", "16384", ["alembic_version", "runs"], "r1")
    for args in (("10:13:", "2026-01-01", "16384", ["runs", "alembic_version"], "r1"),
                 ("10:12:11", "2026-01-02", "16384", ["runs", "alembic_version"], "r1"),
                 ("10:12:11", "2026-01-01", "16385", ["runs", "alembic_version"], "r1"),
                 ("10:12:11", "2026-01-01", "16384", ["runs"], "r1"),
                 ("10:12:11", "2026-01-01", "16384", ["runs", "alembic_version"], "r2")):
        assert pgt.quick_fingerprint(*args) != base
