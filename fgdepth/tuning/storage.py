"""Where a study lives, and what happens to the trials of workers that died.

- ``sqlite:///optuna.db`` (the default): one machine; created by one process before any
  worker starts, since concurrent creation corrupts it;
- ``journal:PATH``: Optuna's journal file, for several processes on one machine;
- ``postgresql://user@host/db``: several machines. RDB storages (SQLite, PostgreSQL) keep a
  heartbeat per running trial: a worker that dies leaves its trial failed and retried.

A study records the data it tunes on in its user attributes (kept by every storage alike):
continuing it on other data is refused unless asked for, and then recorded.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryStale
from optuna.trial import TrialState

from fgdepth.config import Config, ConfigError
from fgdepth.tuning.space import objectives

DEFAULT_STORAGE = "sqlite:///optuna.db"
MAX_RETRY = 2  # a trial whose worker died is run again at most this often
# the study's user attributes that say what it was tuned on
DATA, DATA_PATH, DATA_FORCED = "fgdepth.data", "fgdepth.data_path", "fgdepth.data_forced"


@dataclass(frozen=True)
class StudyData:
    """The data a study tunes on, as the application names it: ``key``, a short digest of the
    rows and splits that trials train and are scored on; ``where``, its place, for people."""

    key: str
    where: str


def masked(url: str) -> str:
    """A storage URL fit for logs, params and tags: the password replaced by ***."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: hide anything between ':' and '@' after the scheme
        scheme, rest = url.split("://", 1)
        if "@" in rest and ":" in rest.split("@", 1)[0]:
            user = rest.split("@", 1)[0].split(":", 1)[0]
            rest = f"{user}:***@{rest.split('@', 1)[1]}"
        return f"{scheme}://{rest}"


def here() -> str:
    """This process, as ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def alive(process: str) -> bool:
    """Whether ``host:pid`` still runs; a process on another host is taken to be alive."""
    import psutil

    host, _, pid = process.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _LostTrial(RetryStale):
    """A trial whose worker stopped beating: close its tracked run (through ``end_run(run_id,
    reason)``, the application's), then run the trial again."""

    def __init__(self, end_run, max_retry: int):
        super().__init__(max_retry=max_retry)
        self.end_run = end_run

    def __call__(self, study, trial) -> None:
        attrs = trial.user_attrs
        if self.end_run is not None and attrs.get("mlflow_run_id"):
            self.end_run(
                attrs["mlflow_run_id"],
                f"worker {attrs.get('worker', '?')} lost (no heartbeat) in trial "
                f"{trial.number}; the trial is run again",
            )
        parent = attrs.get("mlflow_parent_run_id")
        if self.end_run is not None and parent and not alive(attrs.get("coordinator", "")):
            self.end_run(
                parent, f"tuning process {attrs.get('coordinator')} lost (killed) during the study"
            )
        super().__call__(study, trial)


def _rdb(url: str, heartbeat: int, end_run):
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat,
            grace_period=2 * heartbeat + 2,
            heartbeat_stale_trial_callback=_LostTrial(end_run, MAX_RETRY),
        )
    except ImportError as exc:
        raise ConfigError(
            f"storage {masked(url)}: a database driver is missing ({exc}); "
            "for PostgreSQL: pip install 'fgdepth[postgres]'"
        ) from None
    except Exception as exc:  # SQLAlchemy's errors: no password in their text
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"storage {masked(url)}: cannot open ({first})") from None


def open_storage(url: str, heartbeat: int = 60, end_run=None):
    """An Optuna storage from ``url`` (see the module's docstring); ``end_run(run_id,
    reason)`` closes the tracked runs of lost trials."""
    url = os.path.expandvars(url or DEFAULT_STORAGE)
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if not url.startswith(("sqlite:", "postgresql", "mysql")):
        raise ConfigError(
            f"storage '{masked(url)}': use sqlite:///FILE, journal:FILE or postgresql://..."
        )
    return _rdb(url, heartbeat, end_run)


def create_study(
    config: Config, name: str, storage_url: str, heartbeat: int = 60, end_run=None
) -> optuna.Study:
    """Create (or load, to continue) the study: from this one process, before any worker."""
    storage = open_storage(storage_url, heartbeat, end_run)
    wanted = objectives(config.tune.objective)
    directions = list(wanted.values())
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, directions=directions, load_if_exists=True
        )
    except ValueError as exc:
        raise ConfigError(f"study '{name}': {exc}") from None
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(
            f"study '{name}' exists with directions {[d.name.lower() for d in study.directions]}; "
            f"this objective needs {directions}: choose another --study name"
        )
    names = list(wanted)
    if study.metric_names is not None and study.metric_names != names:  # same directions
        raise ConfigError(
            f"study '{name}' exists with objectives {study.metric_names}; this one has "
            f"{names}: choose another --study name"
        )
    study.set_metric_names(names)
    return study


def check_data(study: optuna.Study, data: StudyData, force: bool = False) -> str | None:
    """Record the data of a new study (or of one made before studies recorded it); refuse to
    continue a study on other data unless ``force``, which is then recorded in the study.
    Returns a line to print, or None."""
    name, attrs = study.study_name, study.user_attrs
    here = f"{data.key} ({data.where})"
    if attrs.get(DATA) is None:
        study.set_user_attr(DATA, data.key)
        study.set_user_attr(DATA_PATH, data.where)
        if study.get_trials(deepcopy=False):
            return f"study '{name}' had no record of its data: taken to be this data, {here}"
        return None
    if attrs[DATA] == data.key:
        return None
    own = f"{attrs[DATA]}, {attrs.get(DATA_PATH, '?')}"
    if not force:
        raise ConfigError(
            f"study '{name}' was tuned on other data or splits ({own}); this data is {here}: "
            "leave out --study for a study of its own, or add --force-data to continue it on "
            "this data"
        )
    forced = attrs.get(DATA_FORCED, [])
    entry = {"key": data.key, "path": data.where}
    if entry not in forced:
        study.set_user_attr(DATA_FORCED, [*forced, entry])
    return f"study '{name}' mixes data: tuned on {own}, continued (--force-data) on {here}"


# --- counting trials across workers ----------------------------------------------------------


def superseded(trials) -> set[int]:
    """Failed trials that were retried (their worker died): the retry counts instead."""
    return {n for t in trials for n in RetryStale.retry_history(t)}


def trials_to_go(study: optuna.Study, target: int) -> int:
    """How many more trials to start so that ``target`` end (complete, pruned or failed)."""
    optuna.storages.fail_stale_trials(study)  # RDB: trials whose worker died -> failed, retried
    trials = study.get_trials(deepcopy=False)
    gone = superseded(trials)
    ended = sum(t.state.is_finished() and t.number not in gone for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return target - ended - running


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    gone = superseded(trials)
    out = {s.name.lower(): 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for t in trials:
        if t.state.is_finished():
            key = "retried" if t.number in gone else t.state.name.lower()
            out[key] = out.get(key, 0) + 1
    return out


def running(study: optuna.Study) -> bool:
    return any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))
