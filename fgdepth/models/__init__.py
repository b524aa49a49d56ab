"""Models: a registry by name. Every model takes fg_bg and bg (B,3,H,W) and returns mask and
depth logits (B,1,H,W), and names its parameter groups so that stages can freeze them."""

from fgdepth.models import seed, unet  # noqa: F401  (registers the models)
from fgdepth.models.base import MODELS, DepthMaskModel, build_model, model_class

__all__ = ["MODELS", "DepthMaskModel", "build_model", "model_class"]
