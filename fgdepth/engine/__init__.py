"""The training engine: pure PyTorch, no tracking or tuning. It reports through callbacks."""

from fgdepth.engine.callbacks import Callback, EpochResult, FitResult, StageResult
from fgdepth.engine.fit import DivergenceError, fit

__all__ = ["Callback", "DivergenceError", "EpochResult", "FitResult", "StageResult", "fit"]
