# -*- coding: utf-8 -*-
"""Local to local batch copies (artifact_localfs.copy_files), the chunked listing prefetch and the one flush."""

import hashlib
import os

from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_localfs as localfs
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_transfer import prefetch


def _write(path, data, mtime):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    os.utime(path, (mtime, mtime))


def test_copy_files_copies_bytes_hash_mtime_and_private_modes(tmp_path):
    src, dest = str(tmp_path / "src"), str(tmp_path / "dest")
    files = {("a", "x", "f1.bin"): os.urandom(5000), ("a", "y", "f2.bin"): b"", ("b", "f3.bin"): os.urandom(3 << 20)}
    for index, (parts, data) in enumerate(sorted(files.items())):
        _write(os.path.join(src, *parts), data, 1700000000 + index)
    parts_list = [list(parts) for parts in sorted(files)]
    outcomes = localfs.copy_files(src, parts_list, dest, parts_list, durable=False)
    assert [error for _sha, error in outcomes] == [None, None, None]
    for (parts, data), (sha, _error) in zip(sorted(files.items()), outcomes):
        copy = os.path.join(dest, *parts)
        with open(copy, "rb") as handle:
            assert handle.read() == data
        assert sha == hashlib.sha256(data).hexdigest()
        assert os.stat(copy).st_mtime == os.stat(os.path.join(src, *parts)).st_mtime
        assert os.stat(copy).st_mode & 0o777 == 0o600
        assert os.stat(os.path.dirname(copy)).st_mode & 0o777 == 0o700
    assert not [name for _root, _dirs, names in os.walk(dest) for name in names if name.startswith(".mlflowops-tmp-")]
    localfs.flush_tree(dest)


def test_copy_files_never_writes_through_a_planted_symlink(tmp_path):
    src, dest, elsewhere = str(tmp_path / "src"), str(tmp_path / "dest"), str(tmp_path / "elsewhere")
    _write(os.path.join(src, "run", "f.bin"), b"secret", 1700000000)
    _write(os.path.join(src, "ok", "g.bin"), b"fine", 1700000000)
    os.makedirs(dest)
    os.makedirs(elsewhere)
    os.symlink(elsewhere, os.path.join(dest, "run"))
    outcomes = localfs.copy_files(src, [["run", "f.bin"], ["ok", "g.bin"]], dest, [["run", "f.bin"], ["ok", "g.bin"]])
    assert isinstance(outcomes[0][1], localfs.UnsafePath) and "symlink" in str(outcomes[0][1])
    assert outcomes[1][1] is None
    assert os.listdir(elsewhere) == []
    with open(os.path.join(dest, "ok", "g.bin"), "rb") as handle:
        assert handle.read() == b"fine"


def test_copy_files_refuses_a_directory_where_the_file_goes(tmp_path):
    src, dest = str(tmp_path / "src"), str(tmp_path / "dest")
    _write(os.path.join(src, "f"), b"data", 1700000000)
    os.makedirs(os.path.join(dest, "f", "inside"))
    outcomes = localfs.copy_files(src, [["f"]], dest, [["f"]])
    assert "is a directory in the destination" in str(outcomes[0][1])
    assert os.listdir(dest) == ["f"]


def test_write_file_refuses_a_directory_where_the_file_goes_and_leaves_no_temporary_file(tmp_path):
    dest = str(tmp_path / "dest")
    os.makedirs(os.path.join(dest, "run", "f", "inside"))
    try:
        localfs.write_file(dest, ["run", "f"], lambda handle: handle.write(b"data"))
    except localfs.MaintenanceError as exc:
        assert str(exc) == "run/f is a directory in the destination; the source has a file there"
    else:
        raise AssertionError("a directory was replaced by a file")
    assert os.listdir(os.path.join(dest, "run")) == ["f"] and os.listdir(os.path.join(dest, "run", "f")) == ["inside"]


def test_prefetch_hands_over_chunks_in_order():
    assert list(prefetch(iter(range(1000)), size=300, chunk=64)) == list(range(1000))
    assert list(prefetch(iter([]), chunk=64)) == []
