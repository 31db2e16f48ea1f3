"""Sparse (CSR) against dense kernels on the CPU backend: where does sparsity start to pay?

For each layer shape and sparsity, one-layer models (conv / matmul with a magnitude-pruned
constant weight, + bias + relu, fused) are compiled twice for ``target="cpu"`` — dense (the
``-O2`` pipeline) and sparse (``use_sparse_kernels`` forced) — and timed interleaved in one
process (median of many calls, ``irgraph.bench.measure``). The crossover of a shape is the
lowest sparsity of the sweep from which the sparse model is faster at every higher sparsity.
``passes/prune_sparse.py`` (``CROSSOVER``) records these figures; ``--kernels`` times the CSR
kernel's tile shapes on their own (``backends/lower_sparse.py``, ``tile_shape``).

    .venv/bin/python benchmarks/bench_sparse.py              # the crossover table (~2 min)
    .venv/bin/python benchmarks/bench_sparse.py --threads 2
    .venv/bin/python benchmarks/bench_sparse.py --kernels    # tile shapes (1, 8) / (2, 4) / (4, 2)

Figures measured on the development machine (AMD EPYC Zen 5, 2 cores shared with other jobs,
AVX-512, 1 thread); speedup = dense median / sparse median:

    case                          P      dense      0.50   0.60   0.70   0.80   0.90   0.95   crossover
    linear 1x512->512             1      0.0208 ms  0.36   0.44   0.52   0.68   0.94   1.17   0.95
    linear 16x512->512            16     0.0701 ms  0.83   1.04   1.25   1.28   1.63   1.92   0.60
    linear 64x512->512            64     0.1937 ms  0.69   0.88   1.08   1.37   2.42   3.10   0.70
    linear 256x256->256           256    0.2108 ms  0.74   0.82   1.03   1.26   1.58   1.74   0.70
    conv3x3 16->32 @4x4 (digits)  16     0.0114 ms  0.91   0.93   0.96   0.99   1.01   1.02   0.90
    conv3x3 32->32 @16x16         256    0.0443 ms  0.73   0.83   0.96   1.18   1.49   1.78   0.80
    conv3x3 64->64 @28x28         784    0.2736 ms  0.63   0.73   0.96   1.42   2.18   3.90   0.80
    conv3x3 128->128 @14x14       196    0.3593 ms  0.57   0.73   0.96   1.52   2.26   3.54   0.80
    conv3x3 256->256 @7x7         49     0.5029 ms  0.57   0.60   0.77   0.99   1.97   3.53   0.90
    conv1x1 256->256 @14x14       196    0.1655 ms  0.81   0.99   1.27   1.76   2.89   3.44   0.70
    linear 1x1024->1024           1      0.0631 ms  0.30   0.38   0.47   0.63   1.14   1.75   0.90
    linear 1x4096->1024           1      0.4038 ms  0.51   0.63   0.70   0.79   1.45   2.44   0.90

The CSR kernel streams one X row per nonzero (one vector load per FMA), where the dense GEMM
reuses each loaded vector across a register tile: it needs about 3x fewer nonzeros to win.
Batch-1 linear layers (P = 1) gather x (about 20 cycles a 16-lane gather on this CPU), and the
dense GEMV they race is bandwidth-bound: fast while the weight fits in L2, slower beyond.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# (kind, description, x shape, weight shape, conv pads)
CASES = [
    ("matmul", "linear 1x512->512", (1, 512), (512, 512), None),
    ("matmul", "linear 1x1024->1024", (1, 1024), (1024, 1024), None),
    ("matmul", "linear 1x4096->1024", (1, 4096), (4096, 1024), None),
    ("matmul", "linear 16x512->512", (16, 512), (512, 512), None),
    ("matmul", "linear 64x512->512", (64, 512), (512, 512), None),
    ("matmul", "linear 256x256->256", (256, 256), (256, 256), None),
    ("conv", "conv3x3 16->32 @4x4 (digits)", (1, 16, 4, 4), (32, 16, 3, 3), 1),
    ("conv", "conv3x3 32->32 @16x16", (1, 32, 16, 16), (32, 32, 3, 3), 1),
    ("conv", "conv3x3 64->64 @28x28", (1, 64, 28, 28), (64, 64, 3, 3), 1),
    ("conv", "conv3x3 128->128 @14x14", (1, 128, 14, 14), (128, 128, 3, 3), 1),
    ("conv", "conv3x3 256->256 @7x7", (1, 256, 7, 7), (256, 256, 3, 3), 1),
    ("conv", "conv1x1 256->256 @14x14", (1, 256, 14, 14), (256, 256, 1, 1), 0),
]


def magnitude_prune(w: np.ndarray, sparsity: float) -> np.ndarray:
    w = w.copy()
    k = int(sparsity * w.size)
    if k:
        w.reshape(-1)[np.argpartition(np.abs(w).reshape(-1), k - 1)[:k]] = 0
    return w


def layer_graph(kind, x_shape, w):
    from irgraph import Graph, TensorType
    g = Graph(kind)
    x = g.add_input("x", TensorType(x_shape, "float32"))
    rng = np.random.default_rng(1)
    if kind == "matmul":
        y = g.op("matmul", [x, g.add_const(w, "w")])
        y = g.op("add", [y, g.add_const(rng.standard_normal(w.shape[1]).astype(np.float32), "b")])
    else:
        pad = w.shape[2] // 2
        y = g.op("conv", [x, g.add_const(w, "w"), g.add_const(rng.standard_normal(w.shape[0]).astype(np.float32), "b")],
                 {"pads": [pad] * 4})
    g.set_outputs([g.op("relu", [y])])
    return g


def compile_both(g, threads: int):
    """(dense, sparse) compiled models of ``g``."""
    import irgraph
    import irgraph.backends.lower_sparse  # noqa: F401  (the CSR kernel's lowering)
    from irgraph.passes.pipelines import pipeline
    from irgraph.passes import PassContext, run_passes
    dense = irgraph.compile(g, target="cpu", num_threads=threads)
    names = pipeline(2)
    names.insert(names.index("fuse_epilogues") + 1, "use_sparse_kernels")
    sg, _ = run_passes(g.copy(), names, PassContext(opt_level=2, options={"sparse.min_sparsity": 0.0}))
    assert any(n.op == "fused" and any(b.op.startswith("sparse_") for b in n.attrs["body"].nodes)
               or n.op.startswith("sparse_") for n in sg.nodes), "the sparse model has no sparse op"
    sparse = irgraph.compile(sg, target="cpu", opt_level=0, num_threads=threads)
    return dense, sparse


def time_pair(dense, sparse, x, budget_s: float = 0.4) -> tuple[float, float]:
    import time

    from irgraph.bench import measure
    calls = {"dense": lambda: dense.run(x), "sparse": lambda: sparse.run(x)}
    for c in calls.values():
        c()
    t0 = time.perf_counter()
    for c in calls.values():
        c()
    rnd = time.perf_counter() - t0
    repeat = int(min(2000, max(15, budget_s / max(rnd, 1e-6))))
    times = measure(calls, repeat, warmup=3)
    return float(np.median(times["dense"]) * 1e3), float(np.median(times["sparse"]) * 1e3)


def crossover(speedups: dict) -> float | None:
    """Lowest sparsity from which every higher one of the sweep is faster sparse."""
    best = None
    for s in sorted(speedups, reverse=True):
        if speedups[s] > 1.0:
            best = s
        else:
            break
    return best


def run_cases(threads: int, sparsities=SPARSITIES, cases=CASES, check: bool = True) -> list[dict]:
    from irgraph import run_graph
    rng = np.random.default_rng(0)
    rows = []
    for kind, desc, x_shape, w_shape, _pad in cases:
        fan_in = np.prod(w_shape[1:]) if kind == "conv" else w_shape[0]
        w0 = (rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(np.float32)
        x = rng.standard_normal(x_shape).astype(np.float32)
        row = {"kind": kind, "case": desc, "p": None, "dense_ms": {}, "sparse_ms": {}, "speedup": {}}
        for s in sparsities:
            g = layer_graph(kind, x_shape, magnitude_prune(w0, s))
            dense, sparse = compile_both(g, threads)
            if check:   # a benchmark of wrong results is worthless
                want = run_graph(g, [x])[0]
                for m in (dense, sparse):
                    np.testing.assert_allclose(m.run(x)[0], want, rtol=1e-4, atol=1e-4)
            d, sp = time_pair(dense, sparse, x)
            row["dense_ms"][s], row["sparse_ms"][s], row["speedup"][s] = d, sp, d / sp
        row["p"] = int(np.prod(x_shape[:-1])) if kind == "matmul" else int(np.prod(x_shape[2:]))
        row["crossover"] = crossover(row["speedup"])
        rows.append(row)
        print(format_row(row, sparsities), flush=True)
    return rows


def format_row(row: dict, sparsities) -> str:
    sp = "  ".join(f"{row['speedup'][s]:5.2f}" for s in sparsities)
    c = row["crossover"]
    return (f"{row['case']:<30} P={row['p']:<5} dense {row['dense_ms'][sparsities[0]]:7.4f} ms  {sp}   "
            f"crossover {'none' if c is None else f'{c:.2f}'}")


def run_kernels(shapes=((16, 512, 512), (64, 512, 512), (256, 256, 256), (784, 576, 64)),
                tiles=((1, 8), (2, 4), (4, 2)), sparsity: float = 0.8) -> None:
    """The CSR kernel alone, per tile shape: ms of ``W (R, K) @ X (K, P)`` on packed panels."""
    from irgraph.backends.cpu.sparse_gemm import CSR, SparseGemmConfig, SparseGemmKernel, pack_panels
    from irgraph.bench import measure
    rng = np.random.default_rng(0)
    kernels = {t: SparseGemmKernel(SparseGemmConfig.for_host(tile_vectors=t[0], chains=t[1]), gather=False,
                                   parallel=False).build() for t in tiles}
    print(f"CSR kernel alone, sparsity {sparsity}, 1 thread (median ms per tile shape (vectors, chains))")
    for P, K, R in shapes:
        csr = CSR.from_dense(magnitude_prune(rng.standard_normal((R, K)).astype(np.float32), sparsity))
        X = rng.standard_normal((1, K, P)).astype(np.float32)
        y = np.empty((R, P), np.float32)
        calls = {}
        for t, k in kernels.items():
            T = k.kernel.config.panel
            Xp = pack_panels(X, T)
            calls[t] = (lambda k=k, Xp=Xp, T=T: k.run(csr, Xp, y, P, T, K * T, P, 1, num_threads=1))
        times = measure(calls, 200, warmup=5)
        print(f"  P={P:<5} K={K:<5} R={R:<4} " + "  ".join(f"{t}: {np.median(v) * 1e3:.4f}" for t, v in times.items()))
    # one column (a batch-1 linear layer): the gather variant on x as it is, or a one-column panel
    gather = SparseGemmKernel(gather=True, parallel=False).build()
    tile = kernels[tiles[0]]
    K = R = 512
    print("one column, 512 x 512 (median ms): gather vs one-column tile")
    for s in (0.5, 0.7, 0.9, 0.95):
        csr = CSR.from_dense(magnitude_prune(rng.standard_normal((R, K)).astype(np.float32), s))
        x = rng.standard_normal((1, K)).astype(np.float32)
        y = np.empty((1, R), np.float32)
        T = tile.kernel.config.panel
        xp = pack_panels(x.T[None].copy(), T)
        times = measure({"gather": lambda: gather.run(csr, x, y, 1, 1, K, 1, R, num_threads=1),
                         "tile": lambda: tile.run(csr, xp, y, 1, T, K * T, 1, 1, num_threads=1)}, 300, warmup=5)
        g, t = (np.median(times[k]) * 1e3 for k in ("gather", "tile"))
        print(f"  sparsity {s}: gather {g:.4f}  tile {t:.4f}  ({t / g:.2f}x)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kernels", action="store_true", help="time the CSR kernel's tile shapes instead")
    ap.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    args = ap.parse_args(argv)
    if args.kernels:
        run_kernels()
        return 0
    print(f"speedup of the sparse model over the dense one ({args.threads} thread(s)); sparsities "
          + " ".join(f"{s:5.2f}" for s in SPARSITIES))
    rows = run_cases(args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
