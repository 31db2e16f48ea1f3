"""The training API: ``Trainer`` and ``irgraph.train``.

    trainer = Trainer(model, loss="sparse_cross_entropy", optimizer=Adam(1e-3), target="cpu",
                      metrics=["accuracy"])
    history = trainer.fit(x, y, epochs=10, batch_size=32, validation=0.2,
                          early_stopping=EarlyStopping("val_loss", patience=3), checkpoint="ckpt/")
    trainer.evaluate(x_test, y_test)      # {"loss": ..., "accuracy": ...}
    trainer.export_onnx("trained.onnx")

One train step (forward, loss, backward, optimizer update: ``step.py``) and one eval step are
compiled for the target on the first batch; afterwards the host feeds batches and carries the
parameters, optimizer state and buffers from call to call. Training drops the last partial
batch of each (shuffled) epoch so every step has the same shape; evaluation covers every sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, IrgraphError
from ..types import TensorType
from . import losses as _losses
from .checkpoint import load_checkpoint, save_checkpoint
from .metrics import get_metric
from .optimizers import get_optimizer
from .progress import ProgressBar
from .step import build_eval_step, build_train_step
from .trainable import as_trainable


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs; with
    ``restore_best`` the parameters of the best epoch are put back at the end."""
    monitor: str = "val_loss"
    patience: int = 3
    min_delta: float = 0.0
    mode: str = "auto"            # "min", "max", or "auto" (max for accuracy-like names)
    restore_best: bool = True

    def better(self, new: float, best: float | None) -> bool:
        if best is None:
            return True
        mode = self.mode
        if mode == "auto":
            mode = "min" if "loss" in self.monitor or "mae" in self.monitor else "max"
        return new < best - self.min_delta if mode == "min" else new > best + self.min_delta


@dataclass
class History:
    history: dict = field(default_factory=dict)      # name -> one value per epoch
    epochs: int = 0
    stopped_early: bool = False
    trainer: "Trainer | None" = None

    def append(self, values: dict) -> None:
        for k, v in values.items():
            self.history.setdefault(k, []).append(float(v))
        self.epochs += 1

    def __getitem__(self, key):
        return self.history[key]


def _regularizer(reg):
    """None, ("l1"|"l2", scale), a list of those, or a callable (g, params) -> Value."""
    if reg is None or callable(reg):
        return reg
    items = [reg] if isinstance(reg, tuple) and len(reg) == 2 and isinstance(reg[0], str) else list(reg)
    fns = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and item[0] in ("l1", "l2")):
            raise IrgraphError(f"bad regularization {item!r}", expected="('l1' or 'l2', scale)", actual=repr(item))
        fns.append((getattr(_losses, item[0]), float(item[1])))

    def build(g, params):
        total = None
        for fn, scale in fns:
            r = fn(g, params, scale)
            total = r if total is None else g.op("add", [total, r])
        return total
    return build


class Trainer:
    def __init__(self, model, loss, optimizer="sgd", *, target: str = "interp", metrics=(),
                 input_specs=None, trainable=None, regularization=None, opt_level: int | None = None,
                 seed: int = 0, lr: float | None = None, **compile_options):
        self.model = as_trainable(model, input_specs, trainable)
        self.loss_fn = _losses.get_loss(loss)
        self.optimizer = get_optimizer(optimizer, lr)
        self.metrics = [get_metric(m) for m in metrics]
        self.regularization = _regularizer(regularization)
        self.target, self.opt_level, self.compile_options = target, opt_level, compile_options
        self.rng = np.random.default_rng(seed)
        self.params = {k: np.array(v, copy=True) for k, v in self.model.params.items()}
        self.state = {(p, s): a for p, v in self.params.items() for s, a in self.optimizer.slots(v).items()}
        self.buffers = {k: np.array(v, copy=True) for k, v in self.model.buffers.items()}
        self.steps_done = 0
        self._train = self._eval = None
        self._target_key = None
        self._version = 0              # bumped whenever params/buffers change: predict's cache key
        self._infer = None             # (version, compiled inference model)

    # ---- compiling -------------------------------------------------------------------------------
    def _target_type(self, y: np.ndarray) -> TensorType:
        first = next(v for v in self.model.train_graph.inputs if v.name == self.model.data_inputs[0])
        batch = first.shape[0] if first.shape else "batch"
        return TensorType((batch,) + tuple(y.shape[1:]), str(y.dtype))

    def _compile(self, y: np.ndarray) -> None:
        key = (tuple(y.shape[1:]), str(y.dtype))
        if self._target_key == key:
            return
        import irgraph
        ttype = self._target_type(y)
        self._train_step = build_train_step(self.model, self.loss_fn, self.optimizer, ttype, self.regularization)
        self._eval_step = build_eval_step(self.model, self.loss_fn, ttype)
        kw = dict(target=self.target, opt_level=self.opt_level, **self.compile_options)
        self._train = irgraph.compile(self._train_step.graph, **kw)
        self._eval = irgraph.compile(self._eval_step.graph, **kw)
        self._target_key = key

    # ---- data ---------------------------------------------------------------------------------------
    def _split_x(self, x) -> list[np.ndarray]:
        names = self.model.data_inputs
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            if missing:
                raise InputError(f"no data for model input {missing[0]!r}", input=missing[0])
            xs = [x[n] for n in names]
        elif isinstance(x, (list, tuple)) and len(names) > 1:
            xs = list(x)
        else:
            xs = [x]
        if len(xs) != len(names):
            raise InputError(f"the model takes {len(names)} data inputs ({', '.join(names)})",
                             expected=len(names), actual=len(xs))
        xs = [np.asarray(a) for a in xs]
        n = xs[0].shape[0] if xs[0].ndim else None
        for name, a in zip(names, xs):
            if a.ndim == 0 or a.shape[0] != n:
                raise InputError("every data array needs the same number of samples on axis 0",
                                 input=name, expected=n, actual=a.shape[0] if a.ndim else "a scalar")
        return xs

    def _feeds(self, step, xs, y, lr=None) -> list[np.ndarray]:
        by = dict(zip(step.data, xs))
        by[step.target] = y
        by.update(self.params)
        by.update(self.buffers)
        for (p, s), (inp, _) in step.state.items():
            by[inp] = self.state[(p, s)]
        if step.lr is not None:
            by[step.lr] = np.float32(lr)
            by[step.step] = np.float32(self.steps_done + 1)
        compiled = self._train if step is self._train_step else self._eval
        return [by[n] for n in compiled.input_names]

    # ---- steps ---------------------------------------------------------------------------------------
    def train_step(self, x, y) -> tuple[float, np.ndarray]:
        """One optimizer step on one batch; returns (loss, predictions)."""
        return self._step(self._split_x(x), np.asarray(y))

    def _step(self, xs: list, y: np.ndarray) -> tuple[float, np.ndarray]:
        self._compile(y)
        st = self._train_step
        feeds = self._feeds(st, xs, y, self.optimizer.lr_at(self.steps_done))
        outs = dict(zip(self._train.output_names, self._train.run(*feeds)))
        loss = float(outs["loss"])
        if not math.isfinite(loss):
            raise IrgraphError(f"the loss became {loss} at step {self.steps_done}",
                               hint="lower the learning rate or check the data")
        for p, o in st.params.items():
            self.params[p] = outs[o]
        for key, (_, o) in st.state.items():
            self.state[key] = outs[o]
        for b, (_, o) in st.buffers.items():
            self.buffers[b] = outs[o]
        self.steps_done += 1
        self._version += 1
        return loss, outs["prediction"]

    def _eval_batch(self, xs, y):
        self._compile(y)
        outs = dict(zip(self._eval.output_names, self._eval.run(*self._feeds(self._eval_step, xs, y))))
        return float(outs["loss"]), outs["prediction"]

    def evaluate(self, x, y, batch_size: int = 256) -> dict:
        """Mean loss and the metrics over ``(x, y)`` with the inference-mode model."""
        return self._evaluate(self._split_x(x), np.asarray(y), batch_size)

    def _evaluate(self, xs: list, y: np.ndarray, batch_size: int = 256) -> dict:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise IrgraphError("batch_size must be a positive integer", expected=">= 1", actual=batch_size)
        total, n = 0.0, xs[0].shape[0]
        if y.ndim == 0 or y.shape[0] != n:
            raise InputError("targets and data have different numbers of samples", expected=n,
                             actual=y.shape[0] if y.ndim else "a scalar")
        for m in self.metrics:
            m.reset()
        for s in range(0, n, batch_size):
            loss, pred = self._eval_batch([a[s:s + batch_size] for a in xs], y[s:s + batch_size])
            total += loss * min(batch_size, n - s)
            for m in self.metrics:
                m.update(pred, y[s:s + batch_size])
        out = {"loss": total / max(n, 1)}
        out.update({m.name: m.result() for m in self.metrics})
        return out

    def inference_model(self):
        """The inference-mode model (dropout off, running statistics) with the current parameters
        compiled for the target; compiled again only after the parameters change."""
        if self._infer is None or self._infer[0] != self._version:
            import irgraph
            model = irgraph.compile(self.inference_graph(), target=self.target, opt_level=self.opt_level,
                                    **self.compile_options)
            self._infer = (self._version, model)
        return self._infer[1]

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Predictions (the model's first output) of the inference-mode model."""
        xs = self._split_x(x)
        model = self.inference_model()
        outs = [model.run(*[a[s:s + batch_size] for a in xs])[0] for s in range(0, xs[0].shape[0], batch_size)]
        return np.concatenate(outs, axis=0)

    # ---- the loop --------------------------------------------------------------------------------------
    def fit(self, x, y, *, epochs: int = 1, batch_size: int = 32, validation=None, shuffle: bool = True,
            early_stopping: EarlyStopping | None = None, checkpoint=None, verbose: bool = True,
            stream=None) -> History:
        if not isinstance(epochs, int) or epochs < 1:
            raise IrgraphError("epochs must be a positive integer", expected=">= 1", actual=epochs)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise IrgraphError("batch_size must be a positive integer", expected=">= 1", actual=batch_size)
        xs, y = self._split_x(x), np.asarray(y)
        if y.shape[0] != xs[0].shape[0]:
            raise InputError("targets and data have different numbers of samples",
                             expected=xs[0].shape[0], actual=y.shape[0])
        val = None
        if isinstance(validation, float):
            if not 0 < validation < 1:
                raise IrgraphError("a validation fraction must lie in (0, 1)", actual=validation)
            cut = int(round(xs[0].shape[0] * (1 - validation)))
            val = ([a[cut:] for a in xs], y[cut:])
            xs, y = [a[:cut] for a in xs], y[:cut]
        elif validation is not None:
            vx, vy = validation
            val = (self._split_x(vx), np.asarray(vy))
        n = xs[0].shape[0]
        steps = n // batch_size
        if steps == 0:
            raise IrgraphError(f"batch_size {batch_size} is larger than the {n} training samples",
                               expected=f"<= {n}", actual=batch_size)
        history = History(trainer=self)
        bar = ProgressBar(epochs, steps, stream=stream, enabled=verbose)
        best, best_params, wait = None, None, 0
        for epoch in range(epochs):
            bar.start_epoch(epoch)
            order = self.rng.permutation(n) if shuffle else np.arange(n)
            for m in self.metrics:
                m.reset()
            total = 0.0
            for s in range(steps):
                idx = order[s * batch_size:(s + 1) * batch_size]
                loss, pred = self._step([a[idx] for a in xs], y[idx])
                total += loss
                for m in self.metrics:
                    m.update(pred, y[idx])
                bar.update(s + 1, {"loss": total / (s + 1)})
            values = {"loss": total / steps}
            values.update({m.name: m.result() for m in self.metrics})
            if val is not None:
                values.update({f"val_{k}": v for k, v in self._evaluate(*val).items()})
            history.append(values)
            bar.end_epoch(values)
            if checkpoint is not None:
                self.save(checkpoint, meta={"epoch": epoch + 1, **{k: float(v) for k, v in values.items()}})
            if early_stopping is not None:
                if early_stopping.monitor not in values:
                    raise IrgraphError(f"early stopping monitors {early_stopping.monitor!r}, "
                                       "which is not computed", expected=", ".join(values),
                                       actual=early_stopping.monitor)
                cur = values[early_stopping.monitor]
                if early_stopping.better(cur, best):
                    best, wait = cur, 0
                    best_params = ({k: v.copy() for k, v in self.params.items()},
                                   {k: v.copy() for k, v in self.buffers.items()})
                else:
                    wait += 1
                    if wait >= early_stopping.patience:
                        history.stopped_early = True
                        break
        if early_stopping is not None and early_stopping.restore_best and best_params is not None:
            self.params, self.buffers = best_params
            self._version += 1
        return history

    # ---- checkpoints and export ----------------------------------------------------------------------------
    def save(self, folder, meta: dict | None = None, keep: int = 3):
        # the shuffling generator's state too, so a resumed fit draws the same epochs
        info = {"steps_done": self.steps_done, "optimizer": self.optimizer.config(),
                "shuffle_rng": self.rng.bit_generator.state, **(meta or {})}
        return save_checkpoint(folder, self.steps_done, self.params, self.state, self.buffers, info, keep)

    def restore(self, folder) -> dict:
        params, state, buffers, meta = load_checkpoint(folder)
        for name, cur in [("parameter", (params, self.params)), ("buffer", (buffers, self.buffers))]:
            new, old = cur
            if set(new) != set(old):
                diff = sorted(set(new) ^ set(old))
                raise IrgraphError(f"checkpoint does not fit this model: {name} {diff[0]!r}",
                                   expected=sorted(old), actual=sorted(new))
            for k, v in new.items():
                if v.shape != old[k].shape or v.dtype != old[k].dtype:
                    raise IrgraphError(f"checkpoint {name} {k!r} has another shape or dtype", input=k,
                                       expected=f"{old[k].dtype}{old[k].shape}", actual=f"{v.dtype}{v.shape}")
        if set(state) != set(self.state):
            raise IrgraphError("checkpoint optimizer state does not fit this optimizer",
                               expected=sorted(map(str, self.state)), actual=sorted(map(str, state)))
        self.params, self.state, self.buffers = params, state, buffers
        self.steps_done = int(meta.get("steps_done", meta.get("step", 0)))
        rng_state = meta.get("shuffle_rng")
        if isinstance(rng_state, dict) and rng_state.get("bit_generator") == type(self.rng.bit_generator).__name__:
            self.rng.bit_generator.state = rng_state
        self._version += 1
        return meta

    def inference_graph(self):
        """The inference-mode model with the current parameters and buffers as constants."""
        g = self.model.eval_graph.copy()
        bound = {**self.params, **self.buffers}
        keep = []
        for v in g.inputs:
            if v.name in bound:
                v.const = np.asarray(bound[v.name])
                g.constants[v.name] = v
            else:
                keep.append(v)
        g.inputs = keep
        return g

    def export_onnx(self, path=None, *, standard: bool = True, opset: int | None = None):
        """The trained inference model as ONNX, written atomically to ``path`` when given; returns
        the ModelProto. ``standard=True`` writes default-domain ONNX ops wherever one fits exactly
        (so onnxruntime runs it); ``False`` writes core ops in the ``ai.irgraph`` domain."""
        g = self.inference_graph()
        if standard:
            from irgraph.frontends.onnx.export_standard import export_standard
            return export_standard(g, path, **({"opset": opset} if opset else {}))
        from irgraph.frontends.onnx.exporter import export_model
        return export_model(g, path)


def train(model, loss, optimizer="sgd", data=None, *, epochs: int = 1, batch_size: int = 32,
          validation=None, metrics=(), early_stopping: EarlyStopping | None = None, target: str = "interp",
          checkpoint=None, shuffle: bool = True, verbose: bool = True, **trainer_options) -> History:
    """Train ``model`` on ``data = (x, y)`` and return the History (``history.trainer`` holds the
    Trainer with the trained parameters)."""
    if data is None or not isinstance(data, (tuple, list)) or len(data) != 2:
        raise IrgraphError("train needs data=(x, y)", expected="a pair (inputs, targets)",
                           actual=type(data).__name__)
    trainer = Trainer(model, loss, optimizer, target=target, metrics=metrics, **trainer_options)
    return trainer.fit(data[0], data[1], epochs=epochs, batch_size=batch_size, validation=validation,
                       shuffle=shuffle, early_stopping=early_stopping, checkpoint=checkpoint, verbose=verbose)
