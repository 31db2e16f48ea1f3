"""Checkpoints: parameters, optimizer state and buffers as ``.npz``, with JSON metadata.

A checkpoint is a folder. Each save writes ``step-<N>.npz`` and ``step-<N>.json`` (each
atomically, through a temp file and a rename), and only then rewrites ``latest.json`` (also
atomically) to point at them. A save interrupted at any moment therefore leaves ``latest.json``
naming the previous, complete pair; ``load`` follows ``latest.json`` and checks the arrays'
sha256 recorded in the metadata. The newest ``keep`` pairs are kept.

Array keys: ``param/<name>``, ``state/<name>/<slot>``, ``buffer/<name>``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import IrgraphError
from ..fileio import load_arrays, save_npz, sha256_file, write_text

FORMAT = "irgraph-checkpoint"
VERSION = 1


def _write_json(path: Path, obj: dict) -> None:
    # fsync: latest.json must never name a pair that is not on disk yet
    write_text(path, json.dumps(obj, indent=1, sort_keys=True), fsync=True)


def save_checkpoint(folder, step: int, params: dict, state: dict, buffers: dict, meta: dict,
                    keep: int = 3) -> Path:
    """Write one checkpoint into ``folder`` (created if needed); returns the ``.npz`` path."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise IrgraphError(f"cannot create checkpoint folder {str(folder)!r}: {e.strerror}") from None
    arrays = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    arrays.update({f"state/{p}/{s}": np.asarray(v) for (p, s), v in state.items()})
    arrays.update({f"buffer/{k}": np.asarray(v) for k, v in buffers.items()})
    stem = f"step-{int(step):08d}"
    npz = folder / f"{stem}.npz"
    save_npz(npz, arrays)
    info = {"format": FORMAT, "version": VERSION, "step": int(step), "arrays": npz.name,
            "sha256": sha256_file(npz), **meta}
    _write_json(folder / f"{stem}.json", info)
    _write_json(folder / "latest.json", {"format": FORMAT, "version": VERSION, "latest": stem})
    _prune(folder, keep)
    return npz


def _prune(folder: Path, keep: int) -> None:
    stems = sorted(p.stem for p in folder.glob("step-*.json"))
    for stem in stems[:-keep] if keep > 0 else []:
        for ext in (".npz", ".json"):
            try:
                (folder / f"{stem}{ext}").unlink()
            except OSError:
                pass


def load_checkpoint(folder) -> tuple[dict, dict, dict, dict]:
    """``(params, state, buffers, meta)`` of the newest complete checkpoint in ``folder``."""
    folder = Path(folder)
    latest = folder / "latest.json"
    if not latest.is_file():
        raise IrgraphError(f"no checkpoint in {str(folder)!r}", expected="a folder holding latest.json")
    head = _read_json(latest)
    stem = head.get("latest")
    if head.get("format") != FORMAT or not isinstance(stem, str) or "/" in stem or "\\" in stem:
        raise IrgraphError(f"{str(latest)!r} is not an irgraph checkpoint index")
    meta = _read_json(folder / f"{stem}.json")
    if meta.get("version", 0) > VERSION:
        raise IrgraphError(f"checkpoint {stem} was written by a newer irgraph",
                           expected=f"version <= {VERSION}", actual=meta.get("version"))
    npz = folder / f"{stem}.npz"
    if not npz.is_file() or sha256_file(npz) != meta.get("sha256"):
        raise IrgraphError(f"checkpoint arrays {str(npz)!r} are missing or do not match their checksum")
    arrays = load_arrays(npz)
    params, state, buffers = {}, {}, {}
    for k, v in arrays.items():
        kind, _, rest = k.partition("/")
        if kind == "param":
            params[rest] = v
        elif kind == "buffer":
            buffers[rest] = v
        elif kind == "state":
            p, _, s = rest.rpartition("/")
            state[(p, s)] = v
    return params, state, buffers, meta


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise IrgraphError(f"cannot read checkpoint file {str(path)!r}: {e}") from None
    if not isinstance(obj, dict):
        raise IrgraphError(f"checkpoint file {str(path)!r} is not a JSON object")
    return obj
