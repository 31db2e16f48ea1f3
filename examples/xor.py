"""XOR with a 2-4-1 MLP, trained compiled: forward, loss, backward and Adam in one native step.

    python examples/xor.py [--target interp|cpu] [--epochs N] [--seed S]

Four samples, one batch of four per epoch; the model ends with one logit per sample and the
loss is binary cross-entropy from logits. Prints the loss going down, the four predictions and
the accuracy (100%).
"""
from __future__ import annotations

import time

import numpy as np
from train_args import target_options, training_parser

import irgraph
from irgraph.frontends import dsl
from irgraph.training import Adam

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
Y = np.array([[0], [1], [1], [0]], np.float32)


def build_model(seed: int = 0) -> dsl.Module:
    model = dsl.Sequential(dsl.Dense(4, "tanh", in_features=2), dsl.Dense(1, in_features=4))
    return model.initialize(seed)


def main(argv=None) -> dict:
    args = training_parser(__doc__, epochs=300).parse_args(argv)
    options = target_options(args)

    t0 = time.perf_counter()
    history = irgraph.train(build_model(args.seed), "binary_cross_entropy", Adam(0.05), data=(X, Y),
                            epochs=args.epochs, batch_size=4, shuffle=False, metrics=["accuracy"],
                            target=args.target, input_specs=[(None, 2)], verbose=False, **options)
    seconds = time.perf_counter() - t0
    losses = history["loss"]
    for e in sorted({0, len(losses) // 4, len(losses) // 2, len(losses) - 1}):
        print(f"epoch {e + 1:4d}  loss {losses[e]:.4f}")

    trainer = history.trainer
    logits = trainer.predict(X)
    probs = 1.0 / (1.0 + np.exp(-logits))
    accuracy = float(np.mean((logits > 0) == (Y > 0.5)))
    for x, p in zip(X, probs[:, 0]):
        print(f"xor({int(x[0])}, {int(x[1])}) = {p:.3f}")
    print(f"accuracy {accuracy:.0%}, {len(losses)} steps on target {args.target} in {seconds:.2f} s")
    return {"accuracy": accuracy, "losses": losses, "probs": probs[:, 0].tolist(), "seconds": seconds}


if __name__ == "__main__":
    main()
