"""A tiny character-level transformer, trained on text generated in code, then sampled.

    python examples/char_model.py [--target interp|cpu] [--epochs N] [--layers L]

The text comes from a small grammar (seeded: the same text every run, nothing downloaded).
The model — Embedding + learned positions, causal TransformerEncoderLayer blocks (pre-norm),
LayerNorm, Dense over the characters — is a ``dsl.Module`` subclass; it predicts each next
character of 32-character windows (sparse cross-entropy over every position). Prints the loss
going down and a sample generated one character at a time from a prompt.
"""
from __future__ import annotations

import time

import numpy as np
from train_args import target_options, training_parser

from irgraph.frontends import dsl
from irgraph.training import Adam, Trainer, Warmup

SUBJECTS = ["the cat", "a dog", "the bird", "my friend", "the old man", "a small child"]
VERBS = ["sees", "likes", "follows", "finds", "calls"]
OBJECTS = ["the ball", "a red box", "the river", "her hat", "the green tree", "a blue car"]
PLACES = ["in the park", "at home", "by the sea", "near the hill"]


def make_text(sentences: int = 600, seed: int = 0) -> str:
    """Sentences 'subject verb object [place].' drawn from the word lists above."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(sentences):
        words = [SUBJECTS[rng.integers(len(SUBJECTS))], VERBS[rng.integers(len(VERBS))],
                 OBJECTS[rng.integers(len(OBJECTS))]]
        if rng.random() < 0.5:
            words.append(PLACES[rng.integers(len(PLACES))])
        out.append(" ".join(words) + ".")
    return " ".join(out)


class CharTransformer(dsl.Module):
    """ids (batch, seq) -> next-character logits (batch, seq, vocab)."""

    def __init__(self, vocab: int, seq: int, dim: int = 48, heads: int = 4, layers: int = 1) -> None:
        super().__init__()
        self.embed = dsl.Embedding(vocab, dim)
        self.position = dsl.Parameter((seq, dim), init="small_uniform")
        self.blocks = dsl.ModuleList([dsl.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0,
                                                                  norm_first=True) for _ in range(layers)])
        self.norm = dsl.LayerNorm(dim)
        self.head = dsl.Dense(vocab, in_features=dim)

    def forward(self, ids):
        h = self.embed(ids) + self.position
        for block in self.blocks:
            h = block(h, is_causal=True)      # each position sees itself and the ones before
        return self.head(self.norm(h))


def windows(codes: np.ndarray, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of ``seq`` characters and the same windows shifted by one."""
    n = (len(codes) - 1) // seq
    x = codes[:n * seq].reshape(n, seq)
    y = codes[1:n * seq + 1].reshape(n, seq)
    return x.astype(np.int64), y.astype(np.int64)


def generate(trainer: Trainer, prompt: np.ndarray, length: int, temperature: float,
             rng: np.random.Generator) -> np.ndarray:
    """Extend ``prompt`` (seq codes) by ``length`` codes, sampling each from the model."""
    seq = len(prompt)
    out = list(prompt)
    for _ in range(length):
        logits = trainer.predict(np.array([out[-seq:]], np.int64))[0, -1].astype(np.float64)
        p = np.exp((logits - logits.max()) / temperature)
        out.append(int(rng.choice(len(p), p=p / p.sum())))
    return np.array(out[seq:])


def main(argv=None) -> dict:
    ap = training_parser(__doc__, epochs=12, quiet=True)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--sentences", type=int, default=600)
    ap.add_argument("--generate", type=int, default=120, help="characters to generate")
    args = ap.parse_args(argv)
    options = target_options(args)

    text = make_text(args.sentences, seed=0)
    chars = sorted(set(text))
    codes = np.array([chars.index(c) for c in text])
    x, y = windows(codes, args.seq)
    model = CharTransformer(len(chars), args.seq, layers=args.layers)
    spec = [((None, args.seq), "int64")]
    model.initialize(args.seed, input_specs=spec)

    steps = len(x) // 16
    t0 = time.perf_counter()
    trainer = Trainer(model, "sparse_cross_entropy", Adam(Warmup(3e-3, warmup_steps=steps)),
                      target=args.target, metrics=["accuracy"], input_specs=spec, seed=args.seed, **options)
    history = trainer.fit(x, y, epochs=args.epochs, batch_size=16, verbose=not args.quiet)
    seconds = time.perf_counter() - t0
    losses = history["loss"]
    print(f"{len(text)} characters, vocabulary {len(chars)}, {len(x)} windows of {args.seq}, "
          f"{model.num_parameters():,} parameters")
    for e, (loss, acc) in enumerate(zip(losses, history["accuracy"])):
        print(f"epoch {e + 1:3d}  loss {loss:.4f}  next-character accuracy {acc:.3f}")
    print(f"{args.epochs} epochs on target {args.target} in {seconds:.1f} s "
          f"(uniform guessing: loss {np.log(len(chars)):.3f})")

    prompt = codes[:args.seq]
    sample = generate(trainer, prompt, args.generate, 0.6, np.random.default_rng(args.seed))
    sample_text = "".join(chars[c] for c in sample)
    print(f"prompt:    {''.join(chars[c] for c in prompt)!r}")
    print(f"generated: {sample_text!r}")
    return {"losses": losses, "accuracy": history["accuracy"], "sample": sample_text, "text": text,
            "seconds": seconds, "vocab": chars}


if __name__ == "__main__":
    main()
