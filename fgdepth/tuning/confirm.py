"""The leading trials trained once more before the best is chosen (``tune.confirm``).

A trial's validation score after a few minutes of training carries that run's own luck (its
seed, its batches, the validation rows it happened to fit), about as large as the gaps
between good recipes; the best of many trials is then often the luckiest rather than the
best. At the end of a study the ``tune.confirm`` leading trials, and the recipe the study
tunes (its trial 0), are trained again with another seed, and the best is the trial whose
runs score best on average: a leader now has to beat the recipe's mean, not its one run.

A rerun is a trial of its own, queued with its trial's values and marked ``RERUN_OF``; it is
never pruned, and it trains with ``seed + 1``. Several objectives have no single best to
confirm: their studies run none.
"""

from __future__ import annotations

import statistics

import optuna
from optuna.trial import FrozenTrial, TrialState

RERUN_OF = "fgdepth.rerun_of"  # a rerun's user attribute: the number of the trial it repeats
RECIPE = "fgdepth.recipe"  # the user attribute of the trial that is the recipe itself
SEED_OFFSET = 1  # a rerun trains with the experiment's seed plus this


def rerun_of(trial) -> int | None:
    """The number of the trial that ``trial`` runs again, or None for a first run."""
    value = trial.user_attrs.get(RERUN_OF)
    return None if value is None else int(value)


def _maximize(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE


def leaders(study: optuna.Study, n: int) -> list[FrozenTrial]:
    """The ``n`` best completed first runs (one per set of values) and the recipe's trial,
    those of them not yet run again (a rerun done, failed, under way or queued), best
    first."""
    trials = study.get_trials(deepcopy=False)
    repeated = {rerun_of(t) for t in trials} - {None}
    done = [t for t in trials if t.state == TrialState.COMPLETE and rerun_of(t) is None]
    done.sort(key=lambda t: t.value, reverse=_maximize(study))
    chosen: dict[str, FrozenTrial] = {}
    for trial in done:
        key = repr(sorted(trial.params.items()))
        if key not in chosen and (len(chosen) < n or RECIPE in trial.user_attrs):
            chosen[key] = trial
    return [t for t in chosen.values() if t.number not in repeated]


def queue_reruns(study: optuna.Study, trials: list[FrozenTrial]) -> None:
    for trial in trials:
        study.enqueue_trial(trial.params, user_attrs={RERUN_OF: trial.number})


def queued(study: optuna.Study, numbers: set[int]) -> bool:
    """Whether a rerun of one of the trials ``numbers`` still waits to be taken."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return any(rerun_of(t) in numbers for t in waiting)


def runs_of(study: optuna.Study) -> dict[int, list[float]]:
    """Each completed first run's number -> the values of its runs (its own first)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = {t.number: [t.value] for t in done if rerun_of(t) is None}
    for trial in done:
        if rerun_of(trial) in values:
            values[rerun_of(trial)].append(trial.value)
    return values


def best_trial(study: optuna.Study) -> tuple[FrozenTrial, float]:
    """A single-objective study's best first run and its value: where some trials were run
    again, the best mean among those (a study continued later chooses among its confirmed
    trials, until it confirms new leaders); else Optuna's best trial."""
    repeated = {n: v for n, v in runs_of(study).items() if len(v) > 1}
    if not repeated:
        return study.best_trial, study.best_value
    pick = max if _maximize(study) else min
    number = pick(repeated, key=lambda n: statistics.fmean(repeated[n]))
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    return trial, statistics.fmean(repeated[number])
