"""A one-line progress bar for training: epoch, step, loss and metrics, redrawn in place.

It writes to stderr, redraws at most ten times a second on a terminal, and prints one line
per epoch when the stream is not a terminal (logs, CI), so output stays readable either way.
"""
from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, epochs: int, steps: int, stream=None, enabled: bool = True, width: int = 24):
        self.epochs, self.steps, self.width = epochs, steps, width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0
        self._t0 = time.perf_counter()

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._t0 = time.perf_counter()

    def update(self, step: int, values: dict) -> None:
        if not self.tty:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and step < self.steps:
            return
        self._last = now
        done = int(self.width * step / max(self.steps, 1))
        bar = "=" * done + ">" * (done < self.width) + "." * (self.width - done - 1)
        self.stream.write(f"\repoch {self.epoch + 1}/{self.epochs} [{bar}] {step}/{self.steps} "
                          + _fmt(values))
        self.stream.flush()

    def end_epoch(self, values: dict) -> None:
        if not self.enabled:
            return
        dt = time.perf_counter() - self._t0
        line = f"epoch {self.epoch + 1}/{self.epochs} - {dt:.1f}s - " + _fmt(values)
        self.stream.write(("\r" + line + " " * 8 + "\n") if self.tty else line + "\n")
        self.stream.flush()


def _fmt(values: dict) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in values.items())
