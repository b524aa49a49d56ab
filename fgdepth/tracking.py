"""MLflow tracking: runs, their params, metrics, pictures and model, and lost runs.

With ``serving`` (the logged model) and ``app.report``, the only modules that import mlflow.
It is handed what to log (the checkpoint file, the model's code): it builds nothing itself.

Where runs go: ``MLFLOW_TRACKING_URI`` when set, else ``mlruns_config/local.yaml`` (a SQLite
store and a local artifact folder). A tracking server (``http://``) keeps the artifacts itself
and may ask for a sign-in: MLflow sends ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` from the environment. Under ``mlflow run`` the run that MLflow created
(``MLFLOW_RUN_ID``) is adopted. A run that fails ends FAILED (KILLED on Ctrl-C) with the
reason in the ``fgdepth.failure`` tag: never left RUNNING.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import tempfile
import time
import urllib.parse
import warnings
from pathlib import Path

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from fgdepth.config import Config, ConfigError
from fgdepth.data.preview import prediction_grid
from fgdepth.data.units import DepthEncoding, parse
from fgdepth.engine.callbacks import Callback, EpochResult, FitResult, StageResult, data_modes
from fgdepth.errors import NotFound

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(__file__).resolve().parent / "mlruns_config"  # shipped in the package
DEFAULT_EXPERIMENT = "fgdepth"
# the UI opens a model-training experiment on its runs, not on the GenAI traces view
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
SAMPLES_KEY = "test_samples"  # the image series of the test samples: a step per stage


def quiet_libraries() -> None:
    """Keep the console for progress and results: MLflow and Alembic chatter goes to warnings."""
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "5")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def tracking_uri() -> str:
    return mlflow.get_tracking_uri()


TRACKING_KEYS = ("tracking_uri", "artifact_root")


def tracking_config_path(name_or_path: str) -> Path:
    """``--tracking``: a shipped ``mlruns_config/NAME.yaml`` by its bare name (a file called
    ``local`` where fgdepth runs does not replace the default), else a YAML file."""
    path = Path(name_or_path)
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if path.name == name_or_path and not path.suffix and shipped.is_file():
        return shipped
    if path.is_file():
        return path
    if path.exists():
        raise ConfigError(f"--tracking {name_or_path}: is a folder, not a tracking config (YAML)")
    names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise NotFound(f"--tracking {name_or_path}: no such file nor tracking config; valid: {names}")


def read_tracking_config(name_or_path: str = "local") -> dict:
    """The settings of ``--tracking`` (``tracking_uri``, ``artifact_root``), checked: one line
    (ConfigError) for a file that is not such a mapping of strings."""
    path = tracking_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not a readable tracking config ({first})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a tracking config is a mapping of {', '.join(TRACKING_KEYS)}")
    for key, value in data.items():
        if key not in TRACKING_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}'; valid: {', '.join(TRACKING_KEYS)}")
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}: {key}: expected a string, got {value!r}")
    if not data.get("tracking_uri") and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ConfigError(f"{path}: no tracking_uri (nor MLFLOW_TRACKING_URI in the environment)")
    return {k: data.get(k) and os.path.expandvars(data[k]) for k in TRACKING_KEYS}


def setup_tracking(config_name: str = "local") -> dict:
    """Point mlflow at the store; returns the tracking settings in use. A tracking server is
    asked once whether it lets this client in (``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD`` when it requires a sign-in)."""
    settings = read_tracking_config(config_name)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or settings["tracking_uri"]
    settings["tracking_uri"] = uri
    mlflow.set_tracking_uri(uri)
    if is_server(uri):
        check_access(uri)
    return settings


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _local_folder(location: str | None) -> bool:
    return bool(location) and "://" not in location


def masked_uri(uri: str) -> str:
    """``uri`` with any password in it replaced by ***."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_access(uri: str) -> None:
    """Fail with one line when the tracking server refuses this client (no or bad sign-in)."""
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code not in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise
        who = os.environ.get("MLFLOW_TRACKING_USERNAME")
        hint = (
            f"as user '{who}' (check MLFLOW_TRACKING_PASSWORD)"
            if who
            else "without credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
        raise ConfigError(f"tracking server {masked_uri(uri)} refused this client {hint}") from None


def experiment_id(name: str, artifact_root: str | None) -> str:
    """The id of experiment ``name``, created with a local artifact folder if it is new. On a
    tracking server a local folder is ignored: the server keeps the artifacts (proxied,
    ``mlflow-artifacts:/``), where every client can read them."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if is_server(mlflow.get_tracking_uri()) and _local_folder(artifact_root):
        artifact_root = None
    location = None
    if artifact_root and "://" not in artifact_root:
        location = (Path(artifact_root).resolve() / name).as_uri()
    elif artifact_root:
        location = f"{artifact_root.rstrip('/')}/{name}"
    try:
        return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
    except mlflow.exceptions.MlflowException:
        return client.get_experiment_by_name(name).experiment_id  # created meanwhile


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{name}.{i}."))
        else:
            out[name] = str(value)[:6000]
    return out


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None  # not a git checkout (e.g. an installed copy)
    return out.stdout.strip() or None


def loss_label(config: Config) -> str:
    """e.g. 'mask=bce+dice,depth=ssim+l1' (the first stage's losses)."""
    terms = config.stages[0].loss or config.loss
    return ",".join(f"{head}={'+'.join(terms[head])}" for head in ("mask", "depth"))


def picture(images: list[dict]):
    """The test samples of one stage: inputs, truth and the run's predictions."""
    return prediction_grid([("run", images)])


class MLflowCallback(Callback):
    """Logs params, per-epoch metrics, per-stage test metrics and pictures, the summary (the
    model is the application's to save: ``log_model``)."""

    def __init__(
        self,
        run_id: str,
        dataset_fingerprint: str,
        entry_point: str | None = None,
        depth_encoding: DepthEncoding | None = None,
    ):
        self.run_id = run_id
        self.client = MlflowClient()
        self.fingerprint = dataset_fingerprint
        self.entry_point = entry_point
        self.depth_encoding = depth_encoding  # the data's, as its dataset.yaml declares
        self.tmp = tempfile.TemporaryDirectory(prefix="fgdepth-")

    def _metrics(self, values: dict[str, float], prefix: str, step: int) -> None:
        metrics = [
            mlflow.entities.Metric(f"{prefix}{k}", float(v), _now(), step)
            for k, v in values.items()
            if v == v
        ]  # NaN (nothing to measure) left out
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_fit_start(self, config: Config, model, info: dict) -> None:
        params = flatten(config.to_dict())
        params["precision_resolved"] = info["precision"]
        params["device"] = info["device"]
        params["depth_encoding"] = str(self.depth_encoding or "none")  # e.g. "log 1-40 m"
        for i, stage in enumerate(info["stages"]):  # after the profile's scaling
            params[f"run.stages.{i}"] = f"{stage.size}px x {stage.samples} x {stage.epochs}ep"
        # under `mlflow run` the entry point's own parameters are logged already, as given
        given = self.client.get_run(self.run_id).data.params
        params = {
            (f"{k}.resolved" if k in given and given[k] != v else k): v
            for k, v in params.items()
            if given.get(k) != v
        }
        items = list(params.items())
        for start in range(0, len(items), 100):
            self.client.log_batch(
                self.run_id,
                params=[mlflow.entities.Param(k, v) for k, v in items[start : start + 100]],
            )
        tags = {
            "fgdepth.experiment": config.name,
            "fgdepth.entry_point": self.entry_point or config.name,
            "fgdepth.losses": loss_label(config),
            "fgdepth.model": config.model.name,
            "fgdepth.profile": config.profile,
            "fgdepth.dataset": config.data.path or "builtin",
            "fgdepth.dataset_fingerprint": self.fingerprint[:16],
            "fgdepth.parameters": str(sum(p.numel() for p in model.parameters())),
            "fgdepth.ranks": str(info.get("ranks", 1)),  # a tag: a resume may use other ranks
            "fgdepth.data_mode": data_modes(info["stages"], info.get("data", [])),
        }
        commit = git_commit()
        if commit:
            tags["fgdepth.git_commit"] = commit
        set_tags(self.run_id, tags)
        path = Path(self.tmp.name) / "config.yaml"
        path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        self.client.log_artifact(self.run_id, str(path))

    def on_epoch_end(self, result: EpochResult, model) -> None:
        self._metrics(result.train, "train_", result.step)
        self._metrics(result.val, "val_", result.step)
        self._metrics(
            {"lr": result.lr, "samples_per_s": result.samples_per_s, "stage": result.stage},
            "",
            result.step,
        )

    def on_stage_end(self, result: StageResult, model) -> None:
        self._metrics(result.test, "test_", result.stage)
        if result.images:
            image = picture(result.images)
            name = f"stage{result.stage}_{result.config.name or result.stage}.png"
            self.client.log_image(self.run_id, image, f"samples/{name}")  # for the report
            # an image series: the UI's chart view compares it across runs and stages
            self.client.log_image(
                self.run_id, image, key=SAMPLES_KEY, step=result.stage, synchronous=True
            )

    def on_fit_end(self, result: FitResult) -> None:
        self._metrics(result.metrics, "", 0)
        self._metrics(
            {
                "train_minutes": result.seconds / 60,
                "train_samples_per_s": result.train_samples_per_s,
            },
            "",
            0,
        )
        summary = {
            "metrics": result.metrics,
            "minutes": result.seconds / 60,
            "train_samples_per_s": result.train_samples_per_s,
            "stopped_early": result.stopped_early,
            "stages": [
                {"name": s.config.name, "size": s.config.size, "test": s.test}
                for s in result.stages
            ],
        }
        folder = Path(self.tmp.name)
        (folder / "metrics.json").write_text(json.dumps(summary, indent=2))
        self.client.log_artifact(self.run_id, str(folder / "metrics.json"))
        if result.stopped_early:
            self.client.set_tag(self.run_id, "fgdepth.stopped_early", result.stopped_early)
        self._metrics({"skipped_rows": len(result.skipped_rows)}, "", 0)
        if result.skipped_rows:
            self.client.set_tag(
                self.run_id, "fgdepth.skipped_rows", json.dumps(result.skipped_rows)[:5000]
            )


def log_model(
    run_id: str,
    checkpoint: Path,
    size: int,
    code: Path,
    depth_encoding: DepthEncoding | None = None,
) -> None:
    """The checkpoint file (``checkpoint/model.pt``) and the model as an MLflow pyfunc
    (``model``): a pair of images in, mask, depth and the foreground's distance out. It is
    built from ``code`` (``fgdepth.serving.MODEL_CODE``) and the run's checkpoint, so loading
    it unpickles nothing; it needs fgdepth installed where it loads. The size it was trained
    at and its data's depth encoding (when declared) are in the model's metadata too.
    (Shipping the package with ``code_paths`` would put a second copy of fgdepth on the
    loading process's import path, ahead of the installed one.)"""
    from importlib.metadata import version

    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    MlflowClient().log_artifact(run_id, str(checkpoint), "checkpoint")
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "bg"), ColSpec("string", "fg_bg")]),
        outputs=Schema(
            [ColSpec("double", "distance"), ColSpec("string", "mask"), ColSpec("string", "depth")]
        ),
    )
    requirements = [
        f"{name}=={version(name)}"
        for name in ("fgdepth", "torch", "pytorch-msssim", "numpy", "pandas", "pillow", "pyyaml")
    ]
    with _active(run_id), warnings.catch_warnings():
        # no input example: it would be a pair of encoded images; the signature says it all
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={"checkpoint": str(checkpoint)},
            signature=signature,
            pip_requirements=requirements,
            metadata={"fgdepth_size": size}
            | ({"fgdepth_depth_encoding": depth_encoding.to_dict()} if depth_encoding else {}),
        )


@contextlib.contextmanager
def _active(run_id: str):
    """Make ``run_id`` the active fluent run for APIs that need one."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id):
        yield


def _now() -> int:
    return int(time.time() * 1000)


@contextlib.contextmanager
def tracked_run(
    experiment_name: str,
    run_name: str | None,
    artifact_root: str | None,
    tags: dict | None = None,
    system_metrics: bool = True,
    *,
    parent_run_id: str | None = None,
    run_id: str | None = None,
    stopped: tuple[type[BaseException], ...] = (),
):
    """Start a run (a child of ``parent_run_id``, in the parent's experiment), or adopt one:
    ``run_id``, else under ``mlflow run`` the run MLflow created. The run ends FINISHED,
    FAILED, or KILLED on Ctrl-C and on the ``stopped`` exceptions (e.g. a pruned trial), with
    the reason in a tag."""
    if parent_run_id:
        os.environ.pop("MLFLOW_RUN_ID", None)  # belongs to the parent: start_run would adopt it
        exp = MlflowClient().get_run(parent_run_id).info.experiment_id
        run = mlflow.start_run(
            experiment_id=exp,
            run_name=run_name,
            tags=tags,
            parent_run_id=parent_run_id,
            nested=True,
            log_system_metrics=system_metrics,
        )
    elif run_id or os.environ.get("MLFLOW_RUN_ID"):
        run = mlflow.start_run(
            run_id=run_id or os.environ["MLFLOW_RUN_ID"], tags=tags,
            log_system_metrics=system_metrics,
        )  # fmt: skip
    else:
        exp = experiment_id(
            os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment_name, artifact_root
        )
        run = mlflow.start_run(
            experiment_id=exp, run_name=run_name, tags=tags, log_system_metrics=system_metrics
        )
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.set_tag("fgdepth.failure", "interrupted (Ctrl-C / SIGINT)")
        mlflow.end_run("KILLED")
        raise
    except stopped as exc:
        mlflow.set_tag("fgdepth.stopped", str(exc)[:5000] or type(exc).__name__)
        mlflow.end_run("KILLED")
        raise
    except BaseException as exc:
        mlflow.set_tag("fgdepth.failure", f"{type(exc).__name__}: {exc}"[:5000])
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def end_lost_run(run_id: str, reason: str, statuses: tuple[str, ...] = ("RUNNING",)) -> bool:
    """Close a run whose process died (no heartbeat), if its status is one of ``statuses``:
    FAILED, with the reason. True when it closed one."""
    if run_status(run_id) not in statuses:
        return False  # gone, no run id, or already ended
    client = MlflowClient()
    client.set_tag(run_id, "fgdepth.failure", reason[:5000])
    client.set_terminated(run_id, "FAILED")
    return True


def run_status(run_id: str) -> str | None:
    """The status of the store's run ``run_id`` (RUNNING, FINISHED, ...); None if there is none."""
    try:
        return MlflowClient().get_run(run_id).info.status
    except mlflow.exceptions.MlflowException:
        return None


def running_runs_tagged(tag: str) -> list:
    """The runs of the store, in any experiment, still RUNNING and with ``tag`` set."""
    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    runs = client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=5000)
    return [run for run in runs if tag in run.data.tags]


def set_tags(run_id: str, tags: dict) -> None:
    """All in one request (a tracking server answers each one)."""
    values = [mlflow.entities.RunTag(k, str(v)[:5000]) for k, v in tags.items()]
    if values:
        MlflowClient().log_batch(run_id, tags=values)


def log_summary(run_id: str, params: dict, metrics: dict, files: dict, tags: dict) -> None:
    """Params, metrics (step 0), tags and files (name -> path) of a run in one go."""
    client = MlflowClient()
    logged = client.get_run(run_id).data.params
    new = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items() if k not in logged]
    values = [mlflow.entities.Metric(k, float(v), _now(), 0) for k, v in metrics.items()]
    client.log_batch(run_id, metrics=values, params=new)
    set_tags(run_id, tags)
    for path in files.values():
        client.log_artifact(run_id, str(path))


def load_logged_model(spec: str):
    """A model from an MLflow model URI (``runs:/ID/model``, ``models:/name@alias``); returns
    (model in eval mode, the size it was trained at, its data's DepthEncoding: None when the
    data declared none, or for a model logged before encodings were kept)."""
    if "://" not in spec and not spec.startswith(("runs:/", "models:/")):
        raise NotFound(f"{spec}: no such checkpoint file or MLflow model URI")
    import mlflow.pyfunc

    try:
        info = mlflow.models.get_model_info(spec)
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise NotFound(f"{spec}: no such MLflow model ({exc})") from None
    if "pytorch" in info.flavors:  # a model logged with mlflow.pytorch (earlier runs)
        import mlflow.pytorch

        model = mlflow.pytorch.load_model(spec, map_location="cpu")
        metadata = info.metadata or {}
        declared = metadata.get("fgdepth_depth_encoding")
        return model.eval(), metadata.get("fgdepth_size"), parse(declared) if declared else None
    wrapper = mlflow.pyfunc.load_model(spec).unwrap_python_model()
    return wrapper.model.eval(), wrapper.size, wrapper.depth_encoding


def download_checkpoint(spec: str) -> Path:
    """The checkpoint file of a run: ``runs:/ID[/...]`` or a bare run id."""
    run_id = spec.split("/")[1] if spec.startswith("runs:/") else spec
    try:
        return Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoint/model.pt")
        )
    except mlflow.exceptions.MlflowException as exc:
        raise NotFound(f"{spec}: no checkpoint found in that run ({exc})") from None


def run_of_model(spec: str) -> str:
    """The id of the run that logged model ``spec`` (``runs:/ID/...``, ``models:/...``)."""
    if spec.startswith("runs:/"):
        return spec.split("/")[1]
    try:
        return mlflow.models.get_model_info(spec).run_id
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise NotFound(f"{spec}: no such MLflow model ({exc})") from None


def logged_config(run_id: str) -> dict:
    """The resolved config a run logged (``config.yaml``), as a dict."""
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml")
    except mlflow.exceptions.MlflowException as exc:
        raise NotFound(f"run {run_id}: no config.yaml logged ({exc})") from None
    return yaml.safe_load(Path(path).read_text())


def model_size(run_id: str) -> int:
    """The size a run's model was trained at last (from the model's metadata: no loading)."""
    info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
    return int((info.metadata or {}).get("fgdepth_size") or 64)
