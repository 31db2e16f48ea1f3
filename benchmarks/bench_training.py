"""One training step (forward, loss, backward, Adam update) on the ``cpu`` target against PyTorch.

Models, built in code with fixed seeds:

    digits_cnn      examples/digits_cnn.py's CNN (Conv 16 - MaxPool - Conv 32 - Dense 10) on 8x8
                    images, batch 64, sparse cross-entropy
    bert_encoder    4 post-LN TransformerEncoderLayers (hidden 256, 4 heads, FFN 1024, GELU,
                    dropout 0.1), batch 8, sequence 128, MSE on the hidden states

irgraph's step is ``Trainer.train_step`` (what ``fit`` calls: feeding the batch, one native call,
carrying parameters and optimizer state); PyTorch's is ``zero_grad, forward, loss, backward,
Adam.step`` on the same architecture in training mode. Both get the same thread count
(``torch.set_num_threads(n)`` and the cpu target's ``num_threads=n``); asv uses
``IRGRAPH_BENCH_THREADS`` or every core this process may use. ``track_ratio_vs_torch`` is
irgraph's median step time over PyTorch's, measured interleaved in one loop
(``irgraph.bench.measure``). torch is a benchmark-only dependency; without it the torch
benchmarks are skipped.

    asv run --bench bench_training
    python benchmarks/bench_training.py [--threads 1 2] [--models digits_cnn bert_encoder] [--profile]

The script prints, per thread count and model, both medians (with p10-p90) and the ratio; with
``--profile`` also where irgraph's step spends its time: every kernel of the compiled step timed
alone (as ``profile_kernels.py`` does for inference), summed by kind, and the slowest kernels.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "examples"))   # digits_cnn.build_model

from irgraph.bench import default_threads, measure, summarize  # noqa: E402
from irgraph.frontends import dsl  # noqa: E402
from irgraph.training import Adam, Trainer  # noqa: E402

THREADS = int(os.environ.get("IRGRAPH_BENCH_THREADS") or default_threads())
MODELS = ["digits_cnn", "bert_encoder"]
BATCH = {"digits_cnn": 64, "bert_encoder": 8}
SEQ, HIDDEN, HEADS, LAYERS = 128, 256, 4, 4
LR = 1e-3


# ---- the models -----------------------------------------------------------------------------------

class Encoder(dsl.Module):
    """BERT-style stack of post-LN encoder layers over (batch, seq, hidden) inputs."""

    def __init__(self, layers: int = LAYERS, hidden: int = HIDDEN, heads: int = HEADS) -> None:
        super().__init__()
        self.layers = dsl.ModuleList([dsl.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout=0.1,
                                                                  activation="gelu") for _ in range(layers)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def irgraph_setup(name: str):
    """(module, input_specs, loss, x, y) with fixed seeds."""
    rng = np.random.default_rng(0)
    n = BATCH[name]
    if name == "digits_cnn":
        from digits_cnn import INPUT, build_model
        x = rng.random((n, 1, 8, 8), dtype=np.float32)
        return build_model(0), INPUT, "sparse_cross_entropy", x, rng.integers(0, 10, n).astype(np.int64)
    specs = [(None, SEQ, HIDDEN)]
    x = rng.standard_normal((n, SEQ, HIDDEN), dtype=np.float32)
    y = rng.standard_normal((n, SEQ, HIDDEN), dtype=np.float32)
    return Encoder().initialize(0, input_specs=specs), specs, "mse", x, y


def torch_setup(name: str, module: dsl.Module):
    """The same architecture in PyTorch; the digits CNN starts from irgraph's initial weights."""
    import torch
    from torch import nn
    if name == "digits_cnn":
        net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))
        w = module.state_dict()
        with torch.no_grad():
            for ours, theirs, transpose in (("0", "0", False), ("2", "3", False), ("4", "6", True)):
                wt = w[f"{ours}.weight"]
                net.get_submodule(theirs).weight.copy_(torch.from_numpy(wt.T.copy() if transpose else wt))
                net.get_submodule(theirs).bias.copy_(torch.from_numpy(w[f"{ours}.bias"]))
        return net, nn.functional.cross_entropy
    net = nn.Sequential(*[nn.TransformerEncoderLayer(HIDDEN, HEADS, 4 * HIDDEN, dropout=0.1, activation="gelu",
                                                     batch_first=True) for _ in range(LAYERS)])
    return net, nn.functional.mse_loss


class Case:
    """One model at one thread count: the irgraph Trainer and the PyTorch step, ready to call."""

    def __init__(self, name: str, threads: int):
        self.name, self.threads = name, threads
        module, specs, loss, self.x, self.y = irgraph_setup(name)
        self.params = module.num_parameters()
        t0 = time.perf_counter()
        self.trainer = Trainer(module, loss, Adam(LR), target="cpu", input_specs=specs, num_threads=threads)
        self.first_loss = self.trainer.train_step(self.x, self.y)[0]    # compiles the step
        self.compile_s = time.perf_counter() - t0
        self.torch = None
        try:
            import torch
        except ImportError:
            return
        torch.manual_seed(0)
        net, loss_fn = torch_setup(name, module)
        net.train()
        opt = torch.optim.Adam(net.parameters(), LR)
        tx, ty = torch.from_numpy(self.x), torch.from_numpy(self.y)
        self.torch_params = sum(p.numel() for p in net.parameters())

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(tx), ty)
            loss.backward()
            opt.step()
            return loss

        self.torch_first_loss = float(self._with_threads(step).detach())
        self.torch = step

    def _with_threads(self, fn):
        import torch
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        return fn()

    def irgraph_step(self):
        return self.trainer.train_step(self.x, self.y)

    def torch_step(self):
        return self._with_threads(self.torch)

    def raw_step(self):
        """Just the compiled step on prepared inputs (no Trainer bookkeeping): the host overhead
        of ``train_step`` is the difference."""
        t = self.trainer
        feeds = t._feeds(t._train_step, [self.x], self.y, LR)
        return lambda: t._train.run(*feeds)


_CASES: dict = {}


def case(name: str, threads: int = THREADS) -> Case:
    if (name, threads) not in _CASES:
        _CASES[(name, threads)] = Case(name, threads)
    return _CASES[(name, threads)]


def measure_blocks(calls: dict, rounds: int, block: int) -> dict:
    """Per-call (wall, cpu) seconds, each runtime run ``block`` times in a row (after one
    untimed call) and the runtimes alternating for ``rounds`` rounds: a training loop runs one
    framework at a time, and runtimes called turn about evict each other's caches (here that
    cost PyTorch's small CNN step ~50%, irgraph's ~20%), while alternating blocks still spread
    a shared machine's drift over all of them."""
    out = {n: ([], []) for n in calls}
    names = list(calls)
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for k in range(len(names)):
                n = names[(r + k) % len(names)]
                calls[n]()
                for _ in range(block):
                    w0, c0 = time.perf_counter(), time.process_time()
                    calls[n]()
                    out[n][1].append(time.process_time() - c0)
                    out[n][0].append(time.perf_counter() - w0)
    finally:
        if gc_was_on:
            gc.enable()
    return out


def compare(name: str, threads: int, budget_s: float = 8.0) -> dict:
    """irgraph's and PyTorch's step (and irgraph's compiled step alone, "raw"): medians of
    calls interleaved one by one (``irgraph.bench.measure``), and of calls in alternating
    blocks with their wall and CPU time (``process_time``: what a step costs the machine, not
    inflated by other processes' time slices; at one thread the latency of an idle machine)."""
    c = case(name, threads)
    if c.torch is None:
        raise RuntimeError("PyTorch is not installed (pip install torch==2.13.0)")
    import torch
    torch.set_num_threads(threads)
    calls = {"irgraph": c.irgraph_step, "torch": c.torch_step, "raw": c.raw_step()}
    t0 = time.perf_counter()
    for f in calls.values():
        f()
    per_round = max(time.perf_counter() - t0, 1e-6)
    repeat = int(min(400, max(9, budget_s / per_round)))
    inter = measure(calls, repeat, warmup=2)
    block = max(3, repeat // 8)
    blocks = measure_blocks(calls, rounds=max(2, repeat // block), block=block)
    out: dict = {"repeat": repeat}
    for n in calls:
        out[n] = {"interleaved": summarize(inter[n]), "wall": summarize(blocks[n][0]),
                  "cpu": summarize(blocks[n][1])}
    out["ratio"] = {k: out["irgraph"][k]["median_ms"] / out["torch"][k]["median_ms"]
                    for k in ("interleaved", "wall", "cpu")}
    return out


# ---- where the step spends its time ------------------------------------------------------------------

KINDS = [("gemm (matmul/conv)", {"matmul", "conv", "conv_transpose", "gemm"}),
         ("attention", {"attention"}),
         ("normalization", {"layer_norm", "batch_norm", "batch_norm_training"}),
         ("softmax / loss", {"softmax", "log_softmax", "nll_loss"}),
         ("pooling", {"max_pool", "avg_pool", "max_unpool", "global_pool"}),
         ("reduction", {"reduce_sum", "reduce_mean", "reduce_max", "reduce_min"}),
         ("data movement", {"transpose", "reshape", "concat", "slice", "expand", "gather", "pad",
                            "scatter_elements", "scatter_nd", "flatten", "squeeze", "unsqueeze"})]


def _ops(node) -> set:
    if node.op == "fused":
        return {op for n in node.attrs["body"].nodes for op in _ops(n)}
    return {node.op}


def kind_of(node) -> str:
    ops = _ops(node)
    for kind, names in KINDS:
        if ops & names:
            return kind
    return "elementwise (optimizer, activations, dropout)"


def kernel_profile(name: str, threads: int, repeat: int = 20) -> list[dict]:
    """Every kernel of the compiled step timed alone over the arena of a full run (median; CPU
    time of this thread at one thread, wall time otherwise)."""
    from profile_kernels import node_flops, time_kernels
    c = case(name, threads)
    t = c.trainer
    arrays = t._feeds(t._train_step, [c.x], c.y, LR)
    t._train.run(*arrays)
    # one thread: the kernel runs on this thread, so its CPU time is what it costs, whatever
    # else the machine runs; with more threads only wall time covers the workers
    clock = time.thread_time_ns if threads == 1 else time.perf_counter_ns
    steps = time_kernels(t._train._run.last.graph, arrays, threads, repeat, clock)
    return [{"kernel": s.plan.kernel.name, "kind": kind_of(s.node), "us": statistics.median(ts) / 1e3,
             "flops": node_flops(s.node), "shape": tuple(s.node.outputs[0].type.shape)}
            for s, ts in steps]


def print_profile(name: str, threads: int, step_ms: float, top: int = 8) -> None:
    """Kernels by kind and the slowest ones; ``step_ms``: the step's median (CPU time for one
    thread, so the gap to the kernels' sum is host work, not other processes' time slices)."""
    rows = kernel_profile(name, threads)
    total = sum(r["us"] for r in rows) / 1e3
    by: dict = {}
    for r in rows:
        k = by.setdefault(r["kind"], [0.0, 0, 0])
        k[0] += r["us"] / 1e3
        k[1] += 1
        k[2] += r["flops"]
    print(f"  {name}, {threads} thread(s): {len(rows)} kernels, {total:.2f} ms summed (medians, each "
          f"kernel timed alone); the step: {step_ms:.2f} ms")
    for kind, (ms, n, flops) in sorted(by.items(), key=lambda kv: -kv[1][0]):
        rate = f", {flops / ms / 1e6:.1f} GFLOP/s" if flops else ""
        print(f"    {kind:46s} {ms:8.2f} ms {100 * ms / total:5.1f}%  {n:4d} kernels{rate}")
    print("    slowest kernels:")
    for r in sorted(rows, key=lambda r: -r["us"])[:top]:
        rate = f" {r['flops'] / r['us'] / 1e3:6.1f} GFLOP/s" if r["flops"] else ""
        print(f"      {r['kernel'][:48]:48s} {str(r['shape']):>16s} {r['us'] / 1e3:7.3f} ms  {r['kind']}{rate}")


# ---- asv ----------------------------------------------------------------------------------------------

def _need_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise NotImplementedError("torch is not installed (a benchmark-only dependency)") from None


class TrainStep:
    params = (MODELS, ["irgraph", "torch"])
    param_names = ["model", "runtime"]
    timeout = 900

    def setup(self, model, runtime):
        if runtime == "torch":
            _need_torch()
        c = case(model)
        self.step = c.irgraph_step if runtime == "irgraph" else c.torch_step

    def time_train_step(self, model, runtime):
        self.step()


class TrainStepVsTorch:
    params = MODELS
    param_names = ["model"]
    timeout = 900
    _ratios: dict = {}

    def setup(self, model):
        _need_torch()

    def track_ratio_vs_torch(self, model):
        if model not in self._ratios:
            self._ratios[model] = compare(model, THREADS)["ratio"]["interleaved"]
        return self._ratios[model]
    track_ratio_vs_torch.unit = "ratio"


class TrainStepCompile:
    params = MODELS
    param_names = ["model"]
    timeout = 900

    def track_compile_seconds(self, model):
        return case(model).compile_s
    track_compile_seconds.unit = "seconds"


# ---- the script ---------------------------------------------------------------------------------------

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--budget", type=float, default=8.0, help="seconds of interleaved steps per case")
    ap.add_argument("--profile", action="store_true", help="per-kernel profile of irgraph's step")
    a = ap.parse_args(argv)
    import torch
    print(f"torch {torch.__version__}, {default_threads()} cores. Median ms of one training step: "
          "'interleaved' = runtimes called turn about; 'blocks' = alternating blocks of steps "
          "(wall, and CPU time = process_time)")
    cols = ("interleaved", "wall", "cpu")
    print(f"{'model':13s} {'thr':>3s} {'runtime':8s} " + " ".join(f"{k:>22s}" for k in
                                                               ("interleaved", "blocks: wall", "blocks: cpu")))
    results = {}
    for threads in a.threads:
        for name in a.models:
            r = results[(name, threads)] = compare(name, threads, a.budget)
            for rt in ("irgraph", "raw", "torch"):
                label = {"raw": "compiled"}.get(rt, rt)
                cells = [f"{r[rt][k]['median_ms']:9.2f} ({r[rt][k]['p10_ms']:.1f}-{r[rt][k]['p90_ms']:.1f})"
                         for k in cols]
                print(f"{name:13s} {threads:3d} {label:8s} " + " ".join(f"{x:>22s}" for x in cells))
            print(f"{name:13s} {threads:3d} {'ratio':8s} " + " ".join(f"{r['ratio'][k]:>22.2f}" for k in cols))
            c = case(name, threads)
            if c.params != c.torch_params:
                print(f"  parameter counts differ: irgraph {c.params:,}, torch {c.torch_params:,}")
    print("ratio = irgraph / torch (below 1: irgraph's step is faster); 'compiled' is irgraph's native "
          "step alone, without the Trainer's feeding and bookkeeping")
    for name in a.models:
        c = case(name, a.threads[0])
        print(f"{name}: {c.params:,} parameters; first step (compile) {c.compile_s:.1f} s; "
              f"first-step loss irgraph {c.first_loss:.5f}, torch {c.torch_first_loss:.5f}"
              + (" (same weights: must agree)" if name == "digits_cnn" else " (different weights and masks)"))
    if a.profile:
        print("where irgraph's step spends its time (step: blocked CPU-time median at 1 thread, wall above):")
        for threads in a.threads:
            for name in a.models:
                r = results[(name, threads)]["irgraph"]
                print_profile(name, threads, r["cpu" if threads == 1 else "wall"]["median_ms"])


if __name__ == "__main__":
    sys.path.insert(0, _HERE)
    main()
