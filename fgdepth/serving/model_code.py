"""The pyfunc's model-from-code file: MLflow runs it to build the model (no pickle)."""

import mlflow.models

from fgdepth.serving import ImagePairModel

mlflow.models.set_model(ImagePairModel())
