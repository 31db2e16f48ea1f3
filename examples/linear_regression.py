"""Linear regression y = 2x + 1 by gradient descent: one Dense(1) unit, mean squared error, SGD.

    python examples/linear_regression.py [--target interp|cpu] [--epochs N] [--noise SIGMA]

200 points x in [-1, 1] with y = 2x + 1 plus Gaussian noise (seeded). Every epoch is one
full-batch gradient step, so this is plain gradient descent; prints the loss going down and
the fitted weight and bias (2 and 1, up to the noise), beside numpy's least-squares solution.
"""
from __future__ import annotations

import time

import numpy as np
from train_args import target_options, training_parser

import irgraph
from irgraph.frontends import dsl
from irgraph.training import SGD


def make_data(n: int = 200, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    y = (2 * x + 1 + noise * rng.standard_normal((n, 1))).astype(np.float32)
    return x, y


def main(argv=None) -> dict:
    ap = training_parser(__doc__, epochs=150, lr=0.3)
    ap.add_argument("--noise", type=float, default=0.05)
    args = ap.parse_args(argv)
    options = target_options(args)
    x, y = make_data(noise=args.noise, seed=args.seed)

    model = dsl.Sequential(dsl.Dense(1, in_features=1)).initialize(args.seed)
    t0 = time.perf_counter()
    history = irgraph.train(model, "mse", SGD(args.lr), data=(x, y), epochs=args.epochs,
                            batch_size=len(x), target=args.target, input_specs=[(None, 1)],
                            verbose=False, **options)
    seconds = time.perf_counter() - t0
    losses = history["loss"]
    for e in sorted({0, 4, 19, len(losses) - 1} & set(range(len(losses)))):
        print(f"step {e + 1:4d}  mse {losses[e]:.5f}")

    params = history.trainer.params
    w, b = float(params["0.weight"][0, 0]), float(params["0.bias"][0])
    ls_w, ls_b = np.linalg.lstsq(np.c_[x, np.ones_like(x)], y, rcond=None)[0][:, 0]
    print(f"fitted  y = {w:.4f} x + {b:.4f}   ({args.epochs} steps on target {args.target}, {seconds:.2f} s)")
    print(f"lstsq   y = {ls_w:.4f} x + {ls_b:.4f}   (the exact minimizer for this noisy sample)")
    return {"w": w, "b": b, "lstsq": (float(ls_w), float(ls_b)), "losses": losses, "seconds": seconds}


if __name__ == "__main__":
    main()
