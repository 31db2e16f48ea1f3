"""Pruning a trained model, then fine-tuning it with the training API.

    from irgraph.training.prune import prune, finetune
    pruned, report = prune(trainer.inference_graph(), "channels:0.3")   # smaller weights, same outputs
    tuner = finetune(pruned, x_train, y_train, epochs=3)                 # a Trainer on the pruned model
    model = irgraph.compile(tuner.inference_graph(), target="cpu")       # the fine-tuned pruned model

``prune`` runs the pruning pass (``irgraph.passes.prune_channels`` / ``prune_magnitude``) on an
unfused graph — only the cleanups that make weights constants run, no BatchNorm folding, no
fusion and no sparse kernels — so the result is what ``irgraph.training.Trainable.from_graph``
trains: its float constants become the parameters (batch norms' running statistics stay
constants). ``finetune`` trains it; after magnitude pruning it keeps the pruned weights at zero
(every step's update is masked), so the sparsity survives fine-tuning. To run a fine-tuned
magnitude-pruned graph on CSR kernels, compile it with the same ``prune=`` spec: its weights are
already that sparse, so the pruning pass changes nothing and ``use_sparse_kernels`` picks the
kernels.
"""
from __future__ import annotations

import numpy as np

from ..errors import IrgraphError
from ..graph import Graph


def prune(model, spec: str, *, input_specs=None) -> tuple[Graph, "object"]:
    """``(pruned graph, PruneReport)`` of ``model`` (a Graph, an ONNX model or a DSL module with
    its parameters; ``input_specs`` for DSL modules). The graph keeps batch norms and is unfused."""
    from ..api import to_graph
    from irgraph.passes import PassContext, run_passes
    from irgraph.passes.prune_options import PruneOptions, plan_passes
    options = PruneOptions.parse(spec)
    if options is None:
        raise IrgraphError("prune needs a pruning spec", expected="magnitude:RATIO or channels:RATIO")
    graph = to_graph(model, input_specs)
    names = [n for n in plan_passes([], options) if n != "use_sparse_kernels"]
    ctx = PassContext(opt_level=0, options=options.pass_options(target=None) | {"prune.sparse_kernels": False})
    pruned, _ = run_passes(graph.copy(), names, ctx)
    pruned.verify()
    return pruned, options.finish(pruned)


def _masks(params: dict) -> dict:
    """For each parameter of rank >= 2 holding zeros: where it is nonzero (float 0/1)."""
    out = {}
    for name, value in params.items():
        a = np.asarray(value)
        if a.ndim >= 2 and a.size and np.any(a == 0):
            out[name] = (a != 0).astype(a.dtype)
    return out


def finetune(graph: Graph, x, y, *, loss="sparse_cross_entropy", optimizer=None, epochs: int = 2,
             batch_size: int = 32, target: str = "cpu", keep_zeros: bool | None = None, metrics=("accuracy",),
             seed: int = 0, **trainer_options):
    """A ``Trainer`` over the pruned ``graph`` (its float constants are the parameters), trained
    ``epochs`` epochs on ``(x, y)``. ``keep_zeros`` (default: when the graph came from magnitude
    pruning) holds every zero weight of a conv/matmul-shaped parameter at zero after each step.
    The fine-tuned model is ``trainer.inference_graph()``."""
    from .optimizers import Adam
    from .trainable import Trainable
    from .trainer import Trainer
    if not isinstance(epochs, int) or epochs < 1:
        raise IrgraphError("epochs must be a positive integer", expected=">= 1", actual=epochs)
    if keep_zeros is None:
        keep_zeros = str(graph.meta.get("prune_report", {}).get("spec", "")).startswith("magnitude")
    trainable = Trainable.from_graph(graph)
    trainer = Trainer(trainable, loss, optimizer if optimizer is not None else Adam(1e-3), target=target,
                      metrics=metrics, seed=seed, **trainer_options)
    if not keep_zeros:
        trainer.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=False)
        return trainer
    masks = _masks(trainer.params)
    x, y = np.asarray(x), np.asarray(y)
    n = x.shape[0]
    steps = n // batch_size
    if steps == 0:
        raise IrgraphError(f"batch_size {batch_size} is larger than the {n} training samples",
                           expected=f"<= {n}", actual=batch_size)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(steps):
            idx = order[s * batch_size:(s + 1) * batch_size]
            trainer.train_step(x[idx], y[idx])
            for name, m in masks.items():
                trainer.params[name] = trainer.params[name] * m
    return trainer
