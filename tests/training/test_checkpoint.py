"""Checkpoints round-trip; an interrupted save keeps the previous good checkpoint; damaged or
foreign files are refused with a clear error."""
from __future__ import annotations

import json

import numpy as np
import pytest

from irgraph import IrgraphError
from irgraph.training import checkpoint as ck

P = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}
S = {("w", "m"): np.full((2, 3), 0.5, np.float32)}
B = {"bn.mean": np.zeros(3, np.float32)}


def test_round_trip(tmp_path):
    ck.save_checkpoint(tmp_path, 7, P, S, B, {"epoch": 2})
    params, state, buffers, meta = ck.load_checkpoint(tmp_path)
    assert set(params) == set(P) and set(state) == set(S) and set(buffers) == set(B)
    np.testing.assert_array_equal(params["w"], P["w"])
    np.testing.assert_array_equal(state[("w", "m")], S[("w", "m")])
    assert meta["epoch"] == 2 and meta["step"] == 7


def test_interrupted_save_keeps_the_last_good_one(tmp_path, monkeypatch):
    ck.save_checkpoint(tmp_path, 1, P, S, B, {})

    def boom(path, obj):
        raise KeyboardInterrupt   # dies after the arrays were written, before the index moves

    monkeypatch.setattr(ck, "_write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path, 2, {"w": P["w"] * 0, "b": P["b"]}, S, B, {})
    monkeypatch.undo()
    params, _, _, meta = ck.load_checkpoint(tmp_path)
    assert meta["step"] == 1
    np.testing.assert_array_equal(params["w"], P["w"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_keeps_the_newest(tmp_path):
    for s in range(5):
        ck.save_checkpoint(tmp_path, s, P, S, B, {}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*.npz")) == ["step-00000003.npz", "step-00000004.npz"]


def test_damaged_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(IrgraphError, match="no checkpoint"):
        ck.load_checkpoint(tmp_path)
    npz = ck.save_checkpoint(tmp_path, 3, P, S, B, {})
    data = bytearray(npz.read_bytes())
    data[-20] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(IrgraphError, match="checksum"):
        ck.load_checkpoint(tmp_path)
    (tmp_path / "latest.json").write_text(json.dumps({"format": "irgraph-checkpoint", "latest": "../etc"}))
    with pytest.raises(IrgraphError, match="not an irgraph checkpoint"):
        ck.load_checkpoint(tmp_path)
    (tmp_path / "latest.json").write_text("{oops")
    with pytest.raises(IrgraphError, match="cannot read checkpoint file"):
        ck.load_checkpoint(tmp_path)
