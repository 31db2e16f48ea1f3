"""Build products served from a table instead of being built: an artifact's machine code.

Loading an artifact rebuilds its programs from the stored graph, and each backend's build step
asks the table in force on this thread for the product of the same input (cpu: object code
by the sha256 of the module's LLVM IR; cuda: cubins by the sha256 of the CUDA source) before
compiling it itself:

    with use_objects(table) as served:         # a ServedTable subclass per kind of product
        runner = factory(graph, **options)     # builds call use_objects.take(key)
    served.used                                # the keys that were served

One subclass per kind of product, each with its own thread-local "current" table, so a cpu
load and a cuda load on two threads, or nested, never see each other's table.
"""
from __future__ import annotations

import threading


class ServedTable:
    _local: threading.local

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls._local = threading.local()

    def __init__(self, table: dict):
        self.table = dict(table)
        self.used: list = []

    def __enter__(self):
        self._prev = getattr(self._local, "current", None)
        self._local.current = self
        return self

    def __exit__(self, *exc):
        self._local.current = self._prev
        return False

    @classmethod
    def take(cls, key, accept=None):
        """The product stored under ``key`` in the table in force on this thread (None when
        there is none, or ``accept(product)`` is false); a served key is recorded in ``used``."""
        cur = getattr(cls._local, "current", None)
        if cur is None:
            return None
        hit = cur.table.get(key)
        if hit is None or (accept is not None and not accept(hit)):
            return None
        cur.used.append(key)
        return hit

    @classmethod
    def active(cls) -> bool:
        """Whether a non-empty table is in force on this thread (a build may skip hashing)."""
        cur = getattr(cls._local, "current", None)
        return cur is not None and bool(cur.table)
