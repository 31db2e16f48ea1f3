"""irgraph.fileio: atomic writes leave the old file or the whole new one, never a temp file;
checksums agree with hashlib over the whole file."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from irgraph import IrgraphError
from irgraph import fileio


@pytest.mark.parametrize("fsync", [False, True])
def test_write_text_replaces_the_file(tmp_path, fsync):
    p = tmp_path / "report.txt"
    p.write_text("old")
    fileio.write_text(p, "new\ntext", fsync=fsync)
    assert p.read_text() == "new\ntext"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["report.txt"]


def test_interrupted_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("good")

    def write(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write(p, write)
    assert p.read_text() == "good"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]


def test_missing_folder_is_an_irgraph_error(tmp_path):
    with pytest.raises(IrgraphError, match="does not exist"):
        fileio.write_text(tmp_path / "no" / "such.txt", "x")


def test_sha256_file_reads_past_the_first_chunk(tmp_path):
    data = np.random.default_rng(0).bytes((1 << 20) * 2 + 12345)   # more than two 1 MiB chunks
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    assert fileio.sha256_file(p) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert fileio.sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_npz_round_trip_and_pickles_refused(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array(3, np.int64)}
    fileio.save_npz(tmp_path / "x.npz", arrays)
    back = fileio.load_arrays(tmp_path / "x.npz")
    assert set(back) == {"a", "b"}
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
    np.save(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(IrgraphError, match="pickles are not accepted"):
        fileio.load_arrays(tmp_path / "o.npy")
