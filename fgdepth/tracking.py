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
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import warnings
from pathlib import Path

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from fgdepth.config import Config, ConfigError
from fgdepth.data.disk import check_writable
from fgdepth.data.preview import prediction_grid
from fgdepth.data.units import DepthEncoding, parse
from fgdepth.engine.callbacks import Callback, EpochResult, FitResult, StageResult, data_modes
from fgdepth.engine.stopping import StopNow
from fgdepth.errors import NotFound, UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(__file__).resolve().parent / "mlruns_config"  # shipped in the package
DEFAULT_EXPERIMENT = "fgdepth"
# the UI opens a model-training experiment on its runs, not on the GenAI traces view
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
SAMPLES_KEY = "test_samples"  # the image series of the test samples: a step per stage
# the final model's test samples, under one name in every run and at the artifacts' root (the
# Compare page pairs the files it finds there, and lists no folders), and as a table (the
# evaluation view shows it): the same rows in every run on the same data
TEST_PICTURE = "test_samples.png"
TEST_TABLE = "eval/test_samples.json"
NOTE = "mlflow.note.content"  # the run's description in the UI


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


def setup_tracking(config_name: str = "local", writes: bool = True) -> dict:
    """Point mlflow at the store; returns the tracking settings in use. A tracking server is
    asked once, within seconds, whether it answers (``check_reachable``) and lets this client
    in (``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD`` when it requires a
    sign-in); a local store that a command ``writes`` to must be writable. Each is one line
    before any work."""
    settings = read_tracking_config(config_name)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or settings["tracking_uri"]
    settings["tracking_uri"] = uri
    mlflow.set_tracking_uri(uri)
    if is_server(uri):
        retry_briefly()
        check_reachable(uri)
        check_access(uri)
    elif writes:
        check_local_store(uri, settings.get("artifact_root"))
    return settings


# A server that stops answering during a run is retried (urllib3 says so on the console) for
# about half a minute, not MLflow's default of about four minutes in silence; the run's state
# is kept, to resume it once the server is back.
HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",  # 1 + 2 + 4 + 8 + 16 s between the tries
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",  # seconds a request may take
}
SERVER_TIMEOUT_S = 5  # to answer the first question: is it there at all


def retry_briefly() -> None:
    """MLflow's HTTP retries as ``HTTP_RETRIES`` says, where the environment sets none."""
    for key, value in HTTP_RETRIES.items():
        os.environ.setdefault(key, value)


class ServerUnreachable(UserError):
    """A tracking server that does not answer; one line naming it and what failed."""


def _base_url(uri: str) -> str:
    """``uri`` without a user and password (MLflow sends those itself, as a header)."""
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 address
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)).rstrip("/")


def unanswered(uri: str, timeout: float = SERVER_TIMEOUT_S) -> str | None:
    """Why the server at ``uri`` does not answer one GET of its ``/health`` within ``timeout``
    seconds (``Connection refused``); None when it answers. Any HTTP answer counts (401 from
    a server that asks for a sign-in too: ``check_access`` tells that apart)."""
    import http.client
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{_base_url(uri)}/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answers
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return getattr(reason, "strerror", None) or str(reason) or type(reason).__name__


def check_reachable(uri: str, timeout: float = SERVER_TIMEOUT_S) -> None:
    """ServerUnreachable, one line naming the server and what failed, when it does not answer
    within ``timeout`` seconds: found at once, not after minutes of retries."""
    why = unanswered(uri, timeout)
    if why is not None:
        raise ServerUnreachable(
            f"tracking server {masked_uri(uri)} does not answer ({why}); "
            "start it, or point MLFLOW_TRACKING_URI or --tracking at one that runs"
        )


def check_local_store(uri: str, artifact_root: str | None) -> None:
    """A local store (a SQLite file, a folder) and a local artifact folder can be written;
    Unwritable (one line naming the path) when not."""
    if uri.startswith("sqlite:///") and uri[len("sqlite:///") :] not in ("", ":memory:"):
        db = Path(urllib.parse.unquote(uri[len("sqlite:///") :]).split("?")[0])
        check_writable(db, "file")
        if db.exists():
            check_writable(db.parent, "dir")  # SQLite writes its journal beside the file
    elif uri.startswith("file:") or "://" not in uri:
        check_writable(urllib.parse.urlsplit(uri).path if uri.startswith("file:") else uri)
    if _local_folder(artifact_root):
        check_writable(artifact_root, "dir")


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


# options that only some choices read: (section, option) -> the names that read it
CHOICE_OPTIONS = {
    ("schedule", "step_size"): {"step"},
    ("schedule", "gamma"): {"step"},
    ("schedule", "warmup"): {"onecycle"},
    ("optimizer", "momentum"): {"sgd"},
}


def _reads(config: Config, section: str, option: str, stage: int | None = None) -> bool:
    """Whether the run reads ``section.option`` (of the experiment, or of stage ``stage``):
    some stage's schedule or optimizer is a choice that reads it."""
    choices = CHOICE_OPTIONS.get((section, option))
    if choices is None:
        return True
    stages = config.stages if stage is None else [config.stages[stage]]
    base = getattr(config, section).name
    return any(getattr(s, section).get("name", base) in choices for s in stages)


def run_params(config: Config) -> dict[str, str]:
    """The settings a run uses, flattened: no empty values (None, {}, []), no options of a
    choice it did not make (a step schedule's ``step_size`` under ``onecycle``), no search
    space (a study's parent run has it), no built-in data's settings when it reads a folder."""
    out = {}
    for key, value in flatten(config.to_dict()).items():
        parts = key.split(".")
        if value in ("None", "{}", "[]", "") or parts[0] == "tune":
            continue
        if parts[0] == "stages" and len(parts) == 4:  # stages.N.schedule.OPTION
            if not _reads(config, parts[2], parts[3], int(parts[1])):
                continue
        elif len(parts) == 2 and not _reads(config, parts[0], parts[1]):
            continue
        if key.startswith("data.synth.") and config.data.path:
            continue
        if key == "augment.cutout_size" and not config.augment.cutout:
            continue
        out[key] = value
    return out


def run_name(name: str, seed: int) -> str:
    """How every run of one recipe and seed is named, whatever started it: ``bce_ssim seed 0``."""
    return f"{name} seed {seed}"


def picture(images: list[dict]):
    """The test samples of one stage: inputs, truth and the run's predictions."""
    return prediction_grid([("run", images)])


def _digest(*parts) -> str:
    return hashlib.sha256("\n".join(str(p) for p in parts).encode()).hexdigest()[:12]


def data_digest(fingerprint: str, test_rows) -> str:
    """The digest of a run's test data: its dataset's manifest and files, and the test rows it
    was scored on. Runs with the same digest were tested on the same rows of the same data."""
    return _digest(fingerprint, "test", ",".join(str(int(r)) for r in test_rows))


def dataset_name(config: Config) -> str:
    """The data's name: its folder (or zip) name, or ``builtin``."""
    return Path(config.data.path).stem if config.data.path else "builtin"


def _log_inputs(run_id: str, inputs: list) -> None:
    """``log_inputs``, once more where another run inserted the same dataset at the same
    moment: the store checks that a dataset exists, then inserts it, so two runs logging one
    dataset at once can both insert and one hits the unique key (the second try links it)."""
    try:
        MlflowClient().log_inputs(run_id, datasets=inputs)
    except mlflow.exceptions.MlflowException as exc:
        if "unique" not in str(exc).lower():
            raise
        MlflowClient().log_inputs(run_id, datasets=inputs)


def log_datasets(run_id: str, config: Config, info: dict, fingerprint: str, source: str) -> dict:
    """The run's train and test splits as MLflow datasets (the run's Datasets: training and
    evaluation), each a table of its rows, named after the data, with a digest of the data and
    the split, its source and, as tags, the rows per split and the image size. Returns the
    run's tags that say which test data it was scored on (``fgdepth.data_digest``,
    ``fgdepth.test_rows``, ``fgdepth.image_size``): the report compares runs that share them."""
    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    splits = info["split_rows"]
    size = info["stages"][-1].size  # the size the final model is tested at
    counts = {f"rows.{name}": str(len(rows)) for name, rows in splits.items()}
    described = {
        **counts,
        "image_size": str(size),
        "split": f"test {config.data.test}, val {config.data.val}, seed {config.data.split_seed}",
    }
    digests = {
        "training": _digest(fingerprint, "train", ",".join(map(str, splits["train"]))),
        "evaluation": data_digest(fingerprint, splits["test"]),
    }
    inputs = []
    for context, split in (("training", "train"), ("evaluation", "test")):
        frame = pd.DataFrame({"row": [int(r) for r in splits[split]], "split": split})
        with warnings.catch_warnings():  # a local path: "can be interpreted in multiple ways"
            warnings.filterwarnings("ignore", message=".*interpreted in multiple ways.*")
            warnings.filterwarnings("ignore", message=".*schema contains integer column.*")
            dataset = mlflow.data.from_pandas(
                frame, source=source, name=dataset_name(config), digest=digests[context]
            )
            entity = dataset._to_mlflow_entity()  # its schema is inferred here
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
        tags += [InputTag(k, v) for k, v in described.items()]
        inputs.append(DatasetInput(entity, tags))
    _log_inputs(run_id, inputs)
    return {
        "fgdepth.data_digest": digests["evaluation"],
        "fgdepth.test_rows": str(len(splits["test"])),
        "fgdepth.image_size": str(size),
    }


def row_metrics(image: dict) -> dict[str, float]:
    """One test row's headline metrics, as ``fgdepth.metrics`` measures a split."""
    import torch

    from fgdepth.metrics import MetricAccumulator

    def tensor(key):
        return torch.from_numpy(image[key].astype("float32"))[None, None]

    acc = MetricAccumulator()
    acc.update(tensor("mask_pred"), tensor("depth_pred"), tensor("mask"), tensor("depth"))
    values = acc.compute()
    return {k: values[k] for k in ("mask_iou", "depth_rmse", "fg_distance_error")}


def samples_table(images: list[dict]):
    """The test samples as a table: a row per test row, its pictures and its metrics."""
    import pandas as pd
    from PIL import Image

    from fgdepth.data.preview import colour_depth, to_rgb

    rows = []
    for s in images:
        rows.append({
            "row": s["row"],
            "fg_bg": Image.fromarray(s["fg_bg"]),
            "mask": Image.fromarray(to_rgb(s["mask"])),
            "mask_pred": Image.fromarray(to_rgb(s["mask_pred"])),
            "depth": Image.fromarray(colour_depth(s["depth"])),
            "depth_pred": Image.fromarray(colour_depth(s["depth_pred"])),
            **row_metrics(s),
        })  # fmt: skip
    return pd.DataFrame(rows)


def headline(metrics: dict[str, float]) -> str:
    """``mask IoU 0.9312, depth RMSE 0.0141, distance error 0.0084``."""
    names = {"mask_iou": "mask IoU", "depth_rmse": "depth RMSE",
             "fg_distance_error": "distance error"}  # fmt: skip
    return ", ".join(f"{label} {metrics[k]:.4f}" for k, label in names.items() if k in metrics)


def recipe(config: Config, stages) -> str:
    """What a run trains, in a line: experiment, losses, model, profile, seed, stages."""
    what = f"**{config.name}**" + (f": {config.description}" if config.description else "")
    steps = ", ".join(f"{s.size} px x {s.samples} x {s.epochs} ep" for s in stages)
    return (
        f"{what}. {config.model.name}, losses {loss_label(config)}, profile {config.profile}, "
        f"seed {config.seed}; stages {steps}."
    )


class MLflowCallback(Callback):
    """Logs params, per-epoch metrics, per-stage test metrics and pictures, the summary (the
    model is the application's to save: ``log_model``)."""

    def __init__(
        self,
        run_id: str,
        dataset_fingerprint: str,
        entry_point: str | None = None,
        depth_encoding: DepthEncoding | None = None,
        source: str | None = None,
    ):
        self.run_id = run_id
        self.client = MlflowClient()
        self.fingerprint = dataset_fingerprint
        self.entry_point = entry_point
        self.depth_encoding = depth_encoding  # the data's, as its dataset.yaml declares
        self.source = source  # where the data is read from: its folder, zip or URI
        self.recipe = ""
        self.test_data = ""  # e.g. "12 rows at 32 px"
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
        params = run_params(config)
        params["precision_resolved"] = info["precision"]
        params["device"] = info["device"]
        params["depth_encoding"] = str(self.depth_encoding or "none")  # e.g. "log 1-40 m"
        for i, stage in enumerate(info["stages"]):  # after the profile's scaling
            samples = "samples fitted to train_minutes" if config.train_minutes else stage.samples
            params[f"run.stages.{i}"] = f"{stage.size}px x {samples} x {stage.epochs}ep"
        # under `mlflow run` the entry point's own parameters are logged already, as given
        given = self.client.get_run(self.run_id).data.params
        full = flatten(config.to_dict())
        for key in given.keys() & full.keys() - params.keys():  # given, but empty as resolved
            if given[key] != full[key]:  # e.g. max_minutes=0: the profile's limit, here none
                params[f"{key}.resolved"] = "none" if full[key] == "None" else full[key]
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
        if info.get("split_rows"):
            source = self.source or config.data.path or "builtin"
            tags |= log_datasets(self.run_id, config, info, self.fingerprint, str(source))
            self.test_data = f"{tags['fgdepth.test_rows']} rows at {tags['fgdepth.image_size']} px"
        self.recipe = recipe(config, info["stages"])
        tags[NOTE] = self.recipe
        set_tags(self.run_id, tags)
        path = Path(self.tmp.name) / "config.yaml"
        path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        self.client.log_artifact(self.run_id, str(path))

    def on_epoch_end(self, result: EpochResult, model) -> None:
        self._metrics(result.train, "train_", result.step)
        self._metrics(result.val, "val_", result.step)
        self._metrics(
            {"lr": result.lr, "samples_per_s": result.samples_per_s, "stage": result.stage},
            "train_",
            result.step,
        )

    def on_stage_start(self, stage: int, config) -> None:
        # a training budget fits a stage's samples as it starts: what it was given, per stage
        self._metrics({"stage_samples": config.samples}, "train_", stage)

    def on_stage_end(self, result: StageResult, model) -> None:
        self._metrics(result.test, "test_", result.stage)
        if result.images:
            # an image series: the UI's chart view compares it across runs and stages, its
            # last step being the final model's
            self.client.log_image(
                self.run_id, picture(result.images), key=SAMPLES_KEY, step=result.stage,
                synchronous=True,
            )  # fmt: skip

    def on_fit_end(self, result: FitResult) -> None:
        # the test metrics were logged per stage (test_*): the last stage's are the headline
        # minutes of the whole fit, and of its training steps alone (a time budget's count)
        minutes = {"minutes": result.seconds / 60, "step_minutes": result.train_seconds / 60}
        self._metrics(minutes, "train_", 0)
        final = next((s for s in reversed(result.stages) if s.images), None)
        if final is not None:
            self.client.log_image(self.run_id, picture(final.images), TEST_PICTURE)
            mlflow.log_table(samples_table(final.images), TEST_TABLE, run_id=self.run_id)
        tested = f"Test ({self.test_data})" if self.test_data else "Test"
        note = f"{self.recipe}\n\n{tested}: {headline(result.metrics) or 'not measured'}."
        if result.stopped_early:
            note += f" Stopped early: {result.stopped_early}."
        self.client.set_tag(self.run_id, NOTE, note)
        summary = {
            "metrics": result.metrics,
            "minutes": result.seconds / 60,
            "train_step_minutes": result.train_seconds / 60,
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
        self._metrics({"skipped_rows": len(result.skipped_rows)}, "train_", 0)
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
        if not run_id:  # `mlflow run`'s
            _name_adopted(run, run_name, experiment_name)
    else:
        exp = experiment_id(
            os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment_name, artifact_root
        )
        run = mlflow.start_run(
            experiment_id=exp, run_name=run_name, tags=tags, log_system_metrics=system_metrics
        )
    try:
        yield run
    except StopNow as exc:  # a second signal: stopped at once
        _close(run, "KILLED", "fgdepth.stopped", str(exc))
        raise
    except KeyboardInterrupt:
        _close(run, "KILLED", "fgdepth.failure", "interrupted (Ctrl-C / SIGINT)")
        raise
    except stopped as exc:
        _close(run, "KILLED", "fgdepth.stopped", str(exc)[:5000] or type(exc).__name__)
        raise
    except BaseException as exc:
        _close(run, "FAILED", "fgdepth.failure", f"{type(exc).__name__}: {exc}"[:5000])
        raise
    else:
        mlflow.end_run("FINISHED")


class ServerLost(UserError):
    """A tracking server that stopped answering while a run was under way; one line."""


def _close(run, status: str, tag: str, reason: str) -> None:
    """End the active ``run`` with ``reason`` in ``tag``. When its tracking server has
    stopped answering (what most likely ended the run), ServerLost says so in one line, after
    one more try, not another round of retries."""
    uri = mlflow.get_tracking_uri()
    why = unanswered(uri) if is_server(uri) else None
    if why is not None:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # and at exit, where MLflow ends it
        with contextlib.suppress(Exception):
            mlflow.end_run(status)
        raise ServerLost(
            f"tracking server {masked_uri(uri)} stopped answering ({why}) during run "
            f"{run.info.run_id}, which could not be ended {status}"
        ) from None
    mlflow.set_tag(tag, reason)
    mlflow.end_run(status)


def generated_name(name: str | None) -> bool:
    """Whether ``name`` is one MLflow made up for a run given none (``brave-fox-123``)."""
    from mlflow.utils import name_utils

    parts = (name or "").split("-")
    return (
        len(parts) == 3
        and parts[0] in name_utils._GENERATOR_PREDICATES
        and parts[1] in name_utils._GENERATOR_NOUNS
        and parts[2].isdigit()
    )


def _name_adopted(run, run_name: str | None, experiment_name: str) -> None:
    """A run that ``mlflow run`` created is named as fgdepth names its own (``ENTRY seed N``)
    unless ``--run-name`` gave it a name. One that landed in MLflow's ``Default`` experiment
    (``mlflow run`` without ``--experiment-name``) gets a hint: MLflow cannot move a run."""
    if run_name and generated_name(run.info.run_name):
        mlflow.set_tag("mlflow.runName", run_name)
    wanted = os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment_name
    if run.info.experiment_id == "0" and wanted != "Default":
        print(
            f"fgdepth: run {run.info.run_id} is in experiment 'Default', apart from the "
            f"'{wanted}' runs: start it with mlflow run --experiment-name {wanted}",
            file=sys.stderr,
        )


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
