"""The logged model as an MLflow pyfunc: a pair of images in, mask, depth and distance out.

Input (``mlflow models serve``, or ``mlflow.pyfunc.load_model(uri).predict``): a DataFrame with
the columns ``bg`` and ``fg_bg``, each a base64-encoded image file (PNG or JPEG). Output: a
DataFrame with ``distance`` (median predicted depth inside the predicted mask, 0..1 depth
units; NaN when no foreground is found), ``mask`` (base64 PNG, 0/255) and ``depth`` (base64
16-bit PNG, 0..65535 for 0..1), at the size of the input images.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from PIL import Image

COLUMNS = ("bg", "fg_bg")
MODEL_CODE = Path(__file__).with_name("model_code.py")  # what MLflow runs to build the model


def encode_png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def encode_file(path) -> str:
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode("ascii")


class ImagePairModel(mlflow.pyfunc.PythonModel):
    """Loads the run's checkpoint (``weights_only=True``) and predicts image pairs."""

    def load_context(self, context) -> None:
        from fgdepth.engine.checkpoint import depth_encoding, load_model

        self.model, data = load_model(context.artifacts["checkpoint"])
        self.size = int(data.get("size") or 64)
        self.depth_encoding = depth_encoding(data)  # None: the data declared none

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from fgdepth.data.images import open_image
        from fgdepth.engine.pairs import predict_pairs

        missing = [c for c in COLUMNS if c not in model_input.columns]
        if missing:
            raise ValueError(f"input needs the columns bg and fg_bg (missing: {missing})")
        pairs = [
            (open_image(base64.b64decode(bg)), open_image(base64.b64decode(fg)))
            for bg, fg in zip(model_input["bg"], model_input["fg_bg"], strict=True)
        ]
        preds = predict_pairs(self.model, pairs, self.size)
        return pd.DataFrame(
            {
                "distance": [p.distance for p in preds],
                "mask": [encode_png(p.mask.astype(np.uint8) * 255) for p in preds],
                "depth": [encode_png((p.depth * 65535).round().astype(np.uint16)) for p in preds],
            }
        )
