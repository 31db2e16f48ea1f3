"""Static offsets for buffers with known lifetimes in one arena: best fit, largest first.

Buffers are placed one at a time, largest first. For each, the buffers already placed whose
lifetime overlaps its own are the obstacles; among the gaps between obstacles (in address order)
the smallest one that holds the buffer wins (best fit), else it goes above the highest obstacle.
Offsets and reserved sizes are multiples of the alignment, so every buffer starts aligned.
A few placement orders are tried and the smallest arena kept; each try is O(buffers²).
"""
from __future__ import annotations

import bisect

from .memory_liveness import Buffer

ALIGNMENT = 64

# placement orders: biggest first (ties: longer-lived first, then earlier), and variants; no
# single order wins on every graph, and each try is cheap
_KEYS = {
    "size": lambda b, br: (-b.nbytes, -(b.last - b.first), b.first, b.index),
    "size_first": lambda b, br: (-b.nbytes, b.first, b.index),
    "breadth": lambda b, br: (-br[b.index], -b.nbytes, b.first, b.index),   # busiest steps first
    "area": lambda b, br: (-b.nbytes * (b.last - b.first + 1), -b.nbytes, b.index),
    "lifetime": lambda b, br: (-(b.last - b.first), -b.nbytes, b.index),
}
KEYS = tuple(_KEYS)


def _breadth(buffers: list[Buffer]) -> dict[int, int]:
    """For each buffer, the largest sum of live bytes at any step of its lifetime."""
    if not buffers:
        return {}
    steps = max(b.last for b in buffers) + 2
    delta = [0] * steps
    for b in buffers:
        delta[b.first] += b.nbytes
        delta[b.last + 1] -= b.nbytes
    live, cur = [], 0
    for d in delta:
        cur += d
        live.append(cur)
    return {b.index: max(live[b.first:b.last + 1]) for b in buffers}


def align_up(x: int, alignment: int) -> int:
    return -(-x // alignment) * alignment


def best_fit(buffers: list[Buffer], alignment: int = ALIGNMENT, key: str = "size") -> tuple[list[int], int]:
    """Offsets (indexed like ``buffers``) and the arena size for one placement order."""
    offsets = [0] * len(buffers)
    br = _breadth(buffers) if key == "breadth" else None
    placed: list[tuple[int, int, int, int]] = []     # (offset, end, first, last), by offset
    arena = 0
    for k in sorted(range(len(buffers)), key=lambda k: _KEYS[key](buffers[k], br)):
        b = buffers[k]
        if b.nbytes == 0:
            continue                                  # takes no bytes: offset 0, never an obstacle
        need = align_up(b.nbytes, alignment)
        cur = 0
        best_off, best_gap = -1, None
        for off, end, first, last in placed:
            if first > b.last or last < b.first:
                continue
            gap = off - cur
            if gap >= need and (best_gap is None or gap < best_gap):
                best_off, best_gap = cur, gap
            if end > cur:
                cur = end
        if best_off < 0:
            best_off = cur
        offsets[k] = best_off
        bisect.insort(placed, (best_off, best_off + need, b.first, b.last))
        arena = max(arena, best_off + need)
    return offsets, arena


def place(buffers: list[Buffer], alignment: int = ALIGNMENT, keys=KEYS) -> tuple[list[int], int, str]:
    """The best of the placement orders ``keys``: (offsets indexed like ``buffers``, arena size,
    the order's name)."""
    best: tuple[list[int], int, str] | None = None
    for key in keys:
        offsets, arena = best_fit(buffers, alignment, key)
        if best is None or arena < best[1]:
            best = (offsets, arena, key)
    return best if best is not None else ([], 0, "")
