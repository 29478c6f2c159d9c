#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""Benchmark artifacts_backup's engine against the seed's approach and rsync.

S3 to S3 on a local moto server behind a latency proxy (--latency-ms, default 20 ms per request, like a real S3
region; harness.latency_proxy): SMALL small objects plus BIG objects of BIG_MB MiB.
  - seed: the seed's sequential ``copy_object`` loop, with paging fixed so that it copies everything;
  - ours: ``artifact_sync.sync`` (what the module runs), 16 in flight, server-side copies;
  - incremental: 1% of the small objects rewritten, then ours again on the same destination.
Local to local: FILES files, ours being the module's mirror job (copy, one flush, sha256 manifest written last).
  - ``rsync -a`` into an empty directory, ours into an empty directory;
  - incremental: 1% of the files rewritten, then ours and ``rsync -a`` again, each on its own earlier copy:
    like with like, our incremental run is compared with rsync's incremental run.
Every copy is checked afterwards (counts, and the rewritten files' bytes against the source), so a
run that skipped the work fails instead of looking fast. The last line of the output is one JSON
object with every figure.

The engine is called in-process (module_utils), so Ansible's start-up (a few seconds) is not counted.
Usage: .venv/bin/python bench/bench_artifacts_backup.py [--small 10000] [--big 3] [--big-mb 50]
                                                        [--files 10000] [--reps 3] [--skip-s3] [--skip-local]
"""

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import conftest  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
from _common import timed  # noqa: E402  pylint: disable=wrong-import-position
from harness.latency_proxy import LatencyProxy  # noqa: E402  pylint: disable=wrong-import-position
from harness.services import MotoS3  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.mlflowops.maintenance.plugins.module_utils import (  # noqa: E402  pylint: disable=wrong-import-position
    artifact_stores as stores,
    artifact_sync as sync_utils,
    artifact_transfer as transfer,
    s3 as s3_utils,
)

MB = 1024 * 1024


def seed_copy(client, src_bucket, dest_bucket, prefix):
    """The seed's loop (one copy_object at a time), paged so it copies every object."""
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=src_bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            client.copy_object(Bucket=dest_bucket, Key=obj["Key"], CopySource={"Bucket": src_bucket, "Key": obj["Key"]})
            count += 1
    return count


def ours(src, dest, params, concurrency=16):
    result, _rows = sync_utils.sync(src, dest, transfer.Transfer(params), concurrency=concurrency)
    if result.failures.count:
        raise RuntimeError(result.failures.items[:3])
    return result


def ours_local_job(src, dest):
    """What the module runs local to local (mirror): the copy, the flush, the sha256 manifest written last."""
    from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifacts_backup_job  # pylint: disable=import-outside-toplevel
    from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import Deadline  # pylint: disable=import-outside-toplevel
    from ansible_collections.mlflowops.maintenance.plugins.module_utils.retention import retention_policy  # pylint: disable=import-outside-toplevel
    params = dict(src=src, dest=dest, mode="mirror", compare="auto", delete_extraneous=False, concurrency=16,
                  copy_multipart_threshold_mb=5120, src_snapshot=None, snapshot_if_unchanged=False, retention=None,
                  symlinks="skip", max_consecutive_failures=10, deadline=3600, s3_retries=3)
    out = artifacts_backup_job.copy_job(params, retention_policy(None), False, Deadline(3600), sync_utils.Result())
    assert out["manifest"] and os.path.isfile(out["manifest"]), out
    return out


def sha256_file(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def assert_same_files(src, dest, names):
    """The named files under dest hold the same bytes as under src (the copy really happened)."""
    for name in names:
        relative = os.path.relpath(name, src)
        copy = os.path.join(dest, relative)
        assert os.path.isfile(copy), "missing after the copy: %s" % copy
        assert sha256_file(copy) == sha256_file(name), "different after the copy: %s" % copy


def count_files(root):
    return sum(len([f for f in files if not f.startswith(".mlflowops")]) for _d, _s, files in os.walk(root))


def put_many(client, bucket, keys, body, concurrency=32):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=body), keys))


def med(values):
    return statistics.median(values)


def bench_s3(args):
    from boto3.s3.transfer import TransferConfig
    import boto3  # pylint: disable=import-outside-toplevel
    from botocore.config import Config  # pylint: disable=import-outside-toplevel
    moto = MotoS3().start()
    proxy = None
    try:
        client = moto.client()  # populating and checking talk to moto directly; the timed copies go through the proxy
        endpoint = moto.endpoint_url
        if args.latency_ms > 0:
            proxy = LatencyProxy(moto.endpoint_url, args.latency_ms).start()
            endpoint = proxy.url
            print("latency proxy: %.0f ms per request in front of moto (%s)" % (args.latency_ms, endpoint), flush=True)
        timed_client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=moto.access_key,
                                    aws_secret_access_key=moto.secret_key, region_name=moto.region,
                                    config=Config(max_pool_connections=32, retries={"max_attempts": 3}))
        params = dict(endpoint_url=endpoint, aws_access_key=moto.access_key, aws_secret_key=moto.secret_key,
                      region=moto.region, multipart_threshold_mb=8, multipart_chunksize_mb=8, s3_retries=3)
        ours_client = s3_utils.build_client(params, pool_size=max(16, args.concurrency))
        src_bucket = moto.create_bucket()
        runs = ["%032x" % index for index in range(max(1, args.small // 5))]
        keys = ["mlflow/1/%s/artifacts/f%d.txt" % (runs[i // 5], i % 5) for i in range(args.small)]
        elapsed, _value = timed(lambda: put_many(client, src_bucket, keys, os.urandom(1024)))
        print("populate: %d small objects in %.1fs" % (args.small, elapsed), flush=True)
        big_path = os.path.join(moto.root, "big.bin")
        with open(big_path, "wb") as handle:
            handle.write(os.urandom(args.big_mb * MB))
        for index in range(args.big):
            client.upload_file(big_path, src_bucket, "mlflow/1/big/artifacts/model-%d.bin" % index,
                               Config=TransferConfig(multipart_threshold=8 * MB, multipart_chunksize=8 * MB))
        total = args.small + args.big
        total_bytes = args.small * 1024 + args.big * args.big_mb * MB
        print("populate: %d objects of %d MiB" % (args.big, args.big_mb), flush=True)
        seed_t, ours_t, inc_t = [], [], []
        reader = reading_client(moto)
        big_key = "mlflow/1/big/artifacts/model-0.bin"
        for rep in range(args.reps):
            dest_seed = moto.create_bucket()
            elapsed, count = timed(lambda: seed_copy(timed_client, src_bucket, dest_seed, "mlflow/"))
            assert count == total, count
            seed_t.append(elapsed)
            print("  seed copy: %.1fs" % elapsed, flush=True)
            dest_ours = moto.create_bucket()
            src = stores.S3Store(ours_client, src_bucket, "mlflow")
            dst = stores.S3Store(ours_client, dest_ours, "backup")
            elapsed, result = timed(lambda: ours(src, dst, params, args.concurrency))
            assert result.copied == total, result.copied
            assert sum(1 for _key in keys_of(client, dest_ours, "backup/")) == total
            if args.big:
                assert object_sha256(reader, dest_ours, "backup/" + big_key[len("mlflow/"):]) == object_sha256(
                    reader, src_bucket, big_key), "the big object differs after the copy"
            ours_t.append(elapsed)
            print("  ours: %.1fs" % elapsed, flush=True)
            changed = keys[rep::100][: max(1, args.small // 100)]
            put_many(client, src_bucket, changed, os.urandom(1024))
            elapsed, result = timed(lambda: ours(src, dst, params, args.concurrency))
            assert result.copied == len(changed), (result.copied, len(changed))
            for key in changed[:20]:
                assert object_sha256(reader, dest_ours, "backup/" + key[len("mlflow/"):]) == object_sha256(
                    reader, src_bucket, key), key
            inc_t.append(elapsed)
            print("rep %d: seed %.1fs, ours %.1fs, incremental (%d changed) %.1fs" % (
                rep + 1, seed_t[-1], ours_t[-1], len(changed), inc_t[-1]), flush=True)
        print("\nS3->S3 on moto (%.0f ms added per request): %d objects (%d x 1 KiB + %d x %d MiB = %.0f MiB), "
              "%d repetitions" % (args.latency_ms, total, args.small, args.big, args.big_mb, total_bytes / MB, args.reps))
        print("  seed sequential copy_object (paged): median %.1fs  (%.0f obj/s)" % (med(seed_t), total / med(seed_t)))
        print("  artifacts_backup (%d in flight):     median %.1fs  (%.0f obj/s)"
              % (args.concurrency, med(ours_t), total / med(ours_t)))
        print("  throughput ratio ours/seed:          %.2fx" % (med(seed_t) / med(ours_t)))
        print("  incremental rerun, 1%% changed:       median %.1fs  = %.1f%% of our full run "
              "(the seed has no incremental mode)" % (med(inc_t), 100.0 * med(inc_t) / med(ours_t)))
        return dict(s3_objects=total, s3_bytes=total_bytes, s3_reps=args.reps, s3_seed_s=round(med(seed_t), 3),
                    s3_ours_s=round(med(ours_t), 3), s3_speedup_vs_seed=round(med(seed_t) / med(ours_t), 2),
                    s3_incremental_changed=max(1, args.small // 100), s3_incremental_s=round(med(inc_t), 3),
                    s3_incremental_share_of_full=round(med(inc_t) / med(ours_t), 4), s3_latency_ms=args.latency_ms,
                    s3_concurrency=args.concurrency)
    finally:
        if proxy is not None:
            proxy.stop()
        moto.stop()


def keys_of(client, bucket, prefix):
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"]


def object_sha256(client, bucket, key):
    """sha256 of the object's bytes (read back, so a truncated or skipped copy shows).

    ``client`` should not validate response checksums: moto keeps a multipart source's composite CRC32
    on a single-part CopyObject result, which botocore then rejects although the bytes are right.
    """
    return hashlib.sha256(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def reading_client(moto):
    import boto3  # pylint: disable=import-outside-toplevel
    from botocore.config import Config  # pylint: disable=import-outside-toplevel
    return boto3.client("s3", endpoint_url=moto.endpoint_url, aws_access_key_id=moto.access_key,
                        aws_secret_access_key=moto.secret_key, region_name=moto.region,
                        config=Config(response_checksum_validation="when_required"))


def bench_local(args):
    root = tempfile.mkdtemp(prefix="mlflowops-bench-")
    try:
        src = os.path.join(root, "src")
        names = []
        for index in range(args.files):
            name = os.path.join(src, str(index % 10), "%032x" % (index // 5), "artifacts", "f%d.bin" % (index % 5))
            names.append(name)
            os.makedirs(os.path.dirname(name), exist_ok=True)
            with open(name, "wb") as handle:
                handle.write(os.urandom(4096))
        rsync_t, ours_t, inc_t, rsync_inc_t = [], [], [], []
        for rep in range(args.reps):
            dest_rsync = os.path.join(root, "rsync-%d" % rep)
            dest_ours = os.path.join(root, "ours-%d" % rep)
            subprocess.run(["sync"], check=True)
            elapsed, _value = timed(lambda: subprocess.run(["rsync", "-a", src + "/", dest_rsync + "/"], check=True))
            rsync_t.append(elapsed)
            # every timed candidate starts without the other's dirty pages: our one flush (syncfs) would otherwise
            # also write back what rsync -a just left in the page cache
            subprocess.run(["sync"], check=True)
            elapsed, result = timed(lambda: ours_local_job(src, dest_ours))
            assert result["copied"] == args.files
            assert count_files(dest_ours) == args.files and count_files(dest_rsync) == args.files
            ours_t.append(elapsed)
            changed = names[rep::100]
            for name in changed:
                with open(name, "wb") as handle:
                    handle.write(os.urandom(4096))
                os.utime(name, (time.time() + 5 + rep, time.time() + 5 + rep))
            subprocess.run(["sync"], check=True)
            elapsed, result = timed(lambda: ours_local_job(src, dest_ours))
            assert result["copied"] == len(changed), result["copied"]
            inc_t.append(elapsed)
            subprocess.run(["sync"], check=True)
            elapsed, _value = timed(lambda: subprocess.run(["rsync", "-a", src + "/", dest_rsync + "/"], check=True))
            rsync_inc_t.append(elapsed)
            # Both incremental runs really brought the rewritten files over.
            assert_same_files(src, dest_ours, changed)
            assert_same_files(src, dest_rsync, changed)
            print("rep %d: rsync %.2fs, ours %.2fs, incremental ours %.2fs, incremental rsync %.2fs" % (
                rep + 1, rsync_t[-1], ours_t[-1], inc_t[-1], rsync_inc_t[-1]), flush=True)
            shutil.rmtree(dest_rsync)
            shutil.rmtree(dest_ours)
        print("\nlocal->local: %d files of 4 KiB, %d repetitions" % (args.files, args.reps))
        print("  rsync -a:               median %.2fs" % med(rsync_t))
        print("  artifacts_backup:       median %.2fs  (ratio ours/rsync time %.2f)" % (med(ours_t), med(ours_t) / med(rsync_t)))
        print("  incremental (1%%) rsync: median %.2fs" % med(rsync_inc_t))
        print("  incremental (1%%) ours:  median %.2fs  (ratio ours/rsync incremental time %.2f)" % (
            med(inc_t), med(inc_t) / med(rsync_inc_t)))
        return dict(local_files=args.files, local_reps=args.reps, local_rsync_s=round(med(rsync_t), 3),
                    local_ours_s=round(med(ours_t), 3), local_ratio_ours_to_rsync=round(med(ours_t) / med(rsync_t), 3),
                    local_incremental_changed=len(names[0::100]), local_rsync_incremental_s=round(med(rsync_inc_t), 3),
                    local_ours_incremental_s=round(med(inc_t), 3),
                    local_incremental_ratio_ours_to_rsync=round(med(inc_t) / med(rsync_inc_t), 3))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10000)
    parser.add_argument("--big", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=20.0,
                        help="latency added to every S3 request of the timed copies (a real region: ~20 ms; 0: none)")
    parser.add_argument("--concurrency", type=int, default=16, help="artifacts_backup's requests in flight")
    args = parser.parse_args()
    figures = dict(load_average_start=os.getloadavg()[0])
    print("load average at start: %s" % (os.getloadavg(),), flush=True)
    if not args.skip_local:
        figures.update(bench_local(args))
    if not args.skip_s3:
        figures.update(bench_s3(args))
    figures["load_average_end"] = os.getloadavg()[0]
    print("load average at end: %s" % (os.getloadavg(),))
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
