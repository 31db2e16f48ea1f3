"""Training: losses, optimizers and schedules as graph nodes, the train step, and the Trainer.

    from irgraph.training import Trainer, Adam, EarlyStopping
    history = irgraph.train(model, "sparse_cross_entropy", Adam(1e-3), data=(x, y), epochs=5)

This package is part of the API layer (like ``api.py``): ``step.py`` reaches into
``irgraph.passes.autodiff`` and ``trainer.py`` into the exporter, lazily.
"""
from .losses import (LOSSES, binary_cross_entropy, cross_entropy, get_loss, hinge, l1, l2,  # noqa: F401
                     mse, sparse_cross_entropy)
from .metrics import METRICS, Accuracy, F1, Precision, Recall, get_metric  # noqa: F401
from .optimizers import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, get_optimizer  # noqa: F401
from .schedules import Constant, Cosine, Schedule, StepDecay, Warmup  # noqa: F401
from .step import StepGraph, build_eval_step, build_train_step  # noqa: F401
from .trainable import Trainable, as_trainable  # noqa: F401
from .trainer import EarlyStopping, History, Trainer, train  # noqa: F401
