# -*- coding: utf-8 -*-
"""PostgreSQL: with nothing to compare with, the exact fingerprint is scanned alongside pg_dump, in its snapshot."""
import json
import uuid

from ansible_collections.mlflowops.maintenance.plugins.module_utils import postgres_snapshot as pgs
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_backup import BackupOptions, run_backup
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri


def _store(postgres):
    name = "during_%s" % uuid.uuid4().hex[:6]
    store = parse_backend_store_uri(postgres.create_database(name))
    postgres.psql("CREATE TABLE alembic_version (version_num text); INSERT INTO alembic_version VALUES ('d1');"
                  "CREATE TABLE runs (run_uuid text PRIMARY KEY, n int);"
                  "INSERT INTO runs SELECT 'r' || i, i FROM generate_series(1, 300) i;"
                  "ALTER TABLE runs OWNER TO \"%s\"; ALTER TABLE alembic_version OWNER TO \"%s\"" % (store.user, store.user),
                  name)
    return name, store


def _manifest(result):
    with open(result["backup"]["manifest"]) as handle:
        return json.load(handle)


def test_pending_scan_reads_the_dump_snapshot_not_later_commits(postgres):
    name, store = _store(postgres)
    snap = pgs.DumpSnapshot(store, 10, 10, previous=None)
    try:
        assert snap.fingerprint is None and snap.fingerprint_source == "pending"  # never "unchanged" while pending
        snap.start_scan()
        postgres.psql("INSERT INTO runs VALUES ('late', 0); UPDATE runs SET n = -1 WHERE run_uuid = 'r1'", name)
        pending = snap.finish_scan(60)
        assert snap.fingerprint_source == "scan-during-dump"
        assert snap.row_counts["runs"] == 300  # the snapshot's rows, not the commit that came after it
    finally:
        snap.close()
    later = pgs.DumpSnapshot(store, 10, 10, previous=dict(method=pgs.EXACT_METHOD, value="other"))
    try:
        assert later.fingerprint_source == "scan" and later.row_counts["runs"] == 301
        assert later.fingerprint["value"] != pending["value"]  # the later commit is a change
    finally:
        later.close()


def test_first_and_forced_backups_record_the_exact_fingerprint_that_later_runs_compare(postgres, tmp_path):
    name, store = _store(postgres)
    dest = str(tmp_path / "backups")
    first = run_backup(store, BackupOptions(dest, compression="none", verify="none"))
    manifest = _manifest(first)
    assert first["created"] is True
    assert manifest["fingerprint"]["method"] == pgs.EXACT_METHOD and manifest["fingerprint"]["value"]
    assert manifest["row_counts"]["runs"] == 300
    # the value recorded during the dump is the one a scan before a dump computes on the same rows
    check = pgs.DumpSnapshot(store, 10, 10, previous=dict(method=pgs.EXACT_METHOD, value="other"))
    try:
        assert check.fingerprint["value"] == manifest["fingerprint"]["value"]
    finally:
        check.close()
    postgres.psql("CREATE TABLE IF NOT EXISTS elsewhere (i int); INSERT INTO elsewhere VALUES (1)", "postgres")
    assert run_backup(store, BackupOptions(dest, compression="none", verify="none"))["unchanged"] is True
    forced = run_backup(store, BackupOptions(dest, compression="none", verify="none", force=True))
    assert forced["created"] is True and _manifest(forced)["fingerprint"]["value"] == manifest["fingerprint"]["value"]
    postgres.psql("DELETE FROM runs WHERE run_uuid = 'r9'", name)
    changed = run_backup(store, BackupOptions(dest, compression="none", verify="none"))
    assert changed["created"] is True and _manifest(changed)["row_counts"]["runs"] == 299
