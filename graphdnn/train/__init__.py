"""Training: optimizers (FTRL included), LR schedules, clipping, max-norm, L1/L2, early stopping,
augmentation, progress, learning-curve PNGs, ``fit`` / ``evaluate`` / ``predict``, and data-parallel
training under torchrun (``graphdnn.train.distributed``)."""

from __future__ import annotations

from ..raster import write_png
from .augment import (
    Compose,
    RandomBrightnessContrast,
    RandomHorizontalFlip,
    RandomRotation,
    RandomShift,
    Transform,
)
from .callbacks import Callback, CSVLogger, TensorBoard
from .clipping import clip_gradients_by_global_norm, clip_gradients_by_value
from .constraints import MaxNorm, clip_by_norm, max_norm_
from .distributed import SaveCheckpoint
from .early_stopping import EarlyStopping
from .fit import evaluate, fit, predict
from .ftrl import FTRL
from .history import History
from .losses import accuracy, get_loss, get_metric
from .optimizers import DEFAULT_LEARNING_RATES, OPTIMIZER_NAMES, make_optimizer, trainable
from .plot import plot_learning_curves, render_learning_curves
from .progress import ProgressBar
from .regularizers import (
    l1_l2_regularizer,
    l1_penalty,
    l1_regularizer,
    l2_penalty,
    l2_regularizer,
    total_penalty,
)
from .schedules import ExponentialDecay, PiecewiseConstant, PowerDecay, performance_scheduling

__all__ = [
    "CSVLogger",
    "TensorBoard",
    "DEFAULT_LEARNING_RATES",
    "FTRL",
    "OPTIMIZER_NAMES",
    "Callback",
    "Compose",
    "EarlyStopping",
    "ExponentialDecay",
    "History",
    "MaxNorm",
    "PiecewiseConstant",
    "PowerDecay",
    "ProgressBar",
    "RandomBrightnessContrast",
    "RandomHorizontalFlip",
    "RandomRotation",
    "RandomShift",
    "SaveCheckpoint",
    "Transform",
    "accuracy",
    "clip_by_norm",
    "clip_gradients_by_global_norm",
    "clip_gradients_by_value",
    "evaluate",
    "fit",
    "get_loss",
    "get_metric",
    "l1_l2_regularizer",
    "l1_penalty",
    "l1_regularizer",
    "l2_penalty",
    "l2_regularizer",
    "make_optimizer",
    "max_norm_",
    "performance_scheduling",
    "plot_learning_curves",
    "predict",
    "render_learning_curves",
    "total_penalty",
    "trainable",
    "write_png",
]
