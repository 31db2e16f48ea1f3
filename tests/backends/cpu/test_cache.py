"""The on-disk object-code cache: keys, hits and misses, damaged entries recompiled, atomic writes."""
from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

from irgraph.backends.cpu import cache as object_cache
from irgraph.backends.cpu.cache import ObjectCache, cache_key, compile_cached

ADD_ONE = """
define void @add_one(ptr %x, i64 %n) {
entry:
  br label %head
head:
  %i = phi i64 [0, %entry], [%i1, %body]
  %c = icmp slt i64 %i, %n
  br i1 %c, label %body, label %done
body:
  %p = getelementptr float, ptr %x, i64 %i
  %v = load float, ptr %p
  %w = fadd float %v, 1.0
  store float %w, ptr %p
  %i1 = add i64 %i, 1
  br label %head
done:
  ret void
}
"""


def call_add_one(lib):
    f = lib.cfunc("add_one", None, ctypes.c_void_p, ctypes.c_int64)
    x = np.arange(10, dtype=np.float32)
    f(x.ctypes.data, x.size)
    np.testing.assert_array_equal(x, np.arange(10, dtype=np.float32) + 1)


@pytest.fixture
def cache(tmp_path):
    return ObjectCache(tmp_path / "c")


def test_miss_then_hit(cache):
    lib = compile_cached(ADD_ONE, "opts", cache)
    assert (cache.hits, cache.misses, cache.corrupt) == (0, 1, 0) and lib.timings["cache"] == "miss"
    call_add_one(lib)
    again = ObjectCache(cache.root)                      # a new process sees the same entry
    lib2 = compile_cached(ADD_ONE, "opts", again)
    assert (again.hits, again.misses) == (1, 0) and lib2.timings["cache"] == "hit"
    call_add_one(lib2)
    files = list(cache.root.rglob("*"))
    assert [p.name for p in files if p.is_file()] == [cache_key(ADD_ONE, "opts") + ".o"]
    assert not [p for p in files if p.name.endswith(".tmp")]


def test_key_covers_ir_options_host_and_version(monkeypatch):
    k = cache_key(ADD_ONE, "a")
    assert k == cache_key(ADD_ONE, "a") and len(k) == 64
    assert k != cache_key(ADD_ONE, "b")
    assert k != cache_key(ADD_ONE.replace("1.0", "2.0"), "a")
    assert cache_key("ab", "c") != cache_key("a", "bc")   # parts are length-prefixed
    monkeypatch.setattr(object_cache, "__version__", "999.0")
    assert cache_key(ADD_ONE, "a") != k
    monkeypatch.undo()

    class OtherCPU:
        def key(self):
            return "othercpu|+sse2"
    monkeypatch.setattr(object_cache.llvm_target, "host_cpu", lambda: OtherCPU())
    assert cache_key(ADD_ONE, "a") != k


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "header", "length"])
def test_damaged_entry_is_recompiled(cache, damage):
    compile_cached(ADD_ONE, "", cache)
    path = cache.path(cache_key(ADD_ONE, ""))
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-100] ^= 0x40                               # inside the object code
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "empty":
        blob = bytearray()
    elif damage == "header":
        blob[:8] = b"NOTANOBJ"
    elif damage == "length":
        blob += b"\0" * 16
    path.write_bytes(bytes(blob))
    fresh = ObjectCache(cache.root)
    lib = compile_cached(ADD_ONE, "", fresh)
    assert fresh.corrupt == 1 and fresh.hits == 0 and lib.timings["cache"] == "miss"
    call_add_one(lib)
    again = ObjectCache(cache.root)                      # the rewritten entry is good again
    call_add_one(compile_cached(ADD_ONE, "", again))
    assert again.hits == 1 and again.corrupt == 0


def test_get_and_put_roundtrip(cache):
    assert cache.get("ab" * 32) is None and cache.misses == 1
    assert cache.put("ab" * 32, b"\x7fELF payload")
    assert cache.get("ab" * 32) == b"\x7fELF payload"


def test_unwritable_cache_still_compiles(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    c = ObjectCache(blocker / "sub")                     # mkdir fails: cache silently skipped
    call_add_one(compile_cached(ADD_ONE, "", c))
    assert c.misses == 1 and not (blocker / "sub").exists()


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IRGRAPH_CACHE_DIR", str(tmp_path / "env"))
    assert object_cache.cache_dir() == tmp_path / "env"
    assert object_cache.default_cache().root == tmp_path / "env"
    call_add_one(compile_cached(ADD_ONE, "x"))           # cache=True: the default cache
    assert (tmp_path / "env" / "objects").is_dir()
    monkeypatch.delenv("IRGRAPH_CACHE_DIR")
    assert object_cache.cache_dir() == __import__("pathlib").Path.home() / ".cache" / "irgraph"


def test_no_cache_compiles_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("IRGRAPH_CACHE_DIR", str(tmp_path / "never"))
    call_add_one(compile_cached(ADD_ONE, "", cache=False))
    assert not (tmp_path / "never").exists()


def test_gemm_kernel_through_the_cache(monkeypatch, tmp_path):
    from irgraph.backends.cpu.gemm import Epilogue, GemmConfig, GemmKernel
    monkeypatch.setenv("IRGRAPH_CACHE_DIR", str(tmp_path))
    cfg = GemmConfig.for_host(mr=4, kc=64, mc=16, unroll=1)
    k = GemmKernel(cfg, Epilogue("relu"))
    g1 = k.build()
    g2 = GemmKernel(cfg, Epilogue("relu")).build()
    assert g1.lib.timings["cache"] == "miss" and g2.lib.timings["cache"] == "hit"
    a = np.random.default_rng(0).standard_normal((20, 30), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((30, 40), dtype=np.float32)
    np.testing.assert_array_equal(g1(a, b), g2(a, b))
    np.testing.assert_allclose(g2(a, b), np.maximum(a @ b, 0), rtol=1e-5, atol=1e-5)
    assert len(os.listdir(tmp_path / "objects")) == 1
