"""The command-line flags the training examples share: where to train, how long, which seed.

Shared by ``xor.py``, ``linear_regression.py``, ``digits_mlp.py``, ``digits_cnn.py`` and
``char_model.py``; each adds its own flags to the parser it gets here.
"""
from __future__ import annotations

import argparse

TARGETS = ["interp", "cpu"]


def training_parser(doc: str, *, epochs: int, lr: float | None = None, batch_size: int | None = None,
                    quiet: bool = False) -> argparse.ArgumentParser:
    """A parser with ``--target``, ``--epochs``, ``--seed`` and ``--threads``; ``--lr`` and
    ``--batch-size`` when given a default, ``--quiet`` (no progress bar) when ``quiet``.
    ``doc``: the example's docstring (its first line describes the parser)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--target", choices=TARGETS, default="cpu")
    ap.add_argument("--epochs", type=int, default=epochs)
    if batch_size is not None:
        ap.add_argument("--batch-size", type=int, default=batch_size)
    if lr is not None:
        ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="cpu threads (small models run best on one)")
    if quiet:
        ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def target_options(args: argparse.Namespace) -> dict:
    """The target options for ``Trainer`` / ``irgraph.train``: ``--threads`` on cpu (the
    interpreter takes none)."""
    return {"num_threads": args.threads} if args.target == "cpu" else {}
