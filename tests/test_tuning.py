"""Optuna studies: the search space, trial accounting, and studies tracked in MLflow."""

import dataclasses
import importlib
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from fgdepth.app.tune import confirmations, expectation, tune
from fgdepth.config import ConfigError, load_config
from fgdepth.engine.callbacks import EpochResult, ProgressResult
from fgdepth.engine.fit import DivergenceError
from fgdepth.tuning import (
    PRUNERS,
    NoTrialCompleted,
    PruningCallback,
    StudyData,
    apply_params,
    best_config,
    best_experiment,
    best_trial,
    check_space,
    create_study,
    formula,
    masked,
    objective_values,
    objectives,
    open_storage,
    open_study,
    recipe_params,
    runs_of,
    schedule_label,
    score,
    study_name,
    study_params,
    trial_config,
    trials_to_go,
)
from fgdepth.tuning.confirm import RECIPE, RERUN_OF, leaders, queue_reruns
from fgdepth.tuning.storage import DATA, DATA_FORCED, DATA_PATH


def smoke(*sets, experiment="bce_ssim"):
    return load_config(experiment, "smoke", list(sets))


# --- the search space ------------------------------------------------------------------------


def test_a_schedule_replaces_the_stages_and_each_stage_gets_its_learning_rate():
    config = smoke()
    label = schedule_label(config.tune.schedules[3])
    assert label == "64px/180000x3 > 128px/40000x2"
    out = apply_params(config, {"schedule": label, "lr_stage0": 0.01, "lr_stage1": 0.002})
    assert [(s.name, s.size, s.samples, s.epochs) for s in out.stages] == [
        ("s64", 64, 180000, 3),
        ("s128", 128, 40000, 2),
    ]
    assert [s.optimizer["lr"] for s in out.stages] == [0.01, 0.002]
    assert config.stages[0].optimizer.get("lr") != 0.01  # the input is left as it was


def test_a_longer_schedule_repeats_the_last_stage_and_keeps_its_other_keys():
    config = smoke(experiment="staged_transfer")
    schedule = [{"size": 64}, {"size": 128}, {"size": 128, "epochs": 1}, {"size": 160}]
    tune_cfg = dataclasses.replace(config.tune, schedules=[schedule])
    config = dataclasses.replace(config, tune=tune_cfg)
    out = apply_params(config, {"schedule": schedule_label(schedule)})
    assert [s.size for s in out.stages] == [64, 128, 128, 160]
    assert out.stages[3].freeze == config.stages[2].freeze == ["trunk", "depth"]
    assert out.stages[1].freeze == ["mask"]


def test_loss_weights_and_batch_size_are_searched_when_asked():
    config = smoke("tune.loss_weights={mask: {low: 1, high: 4}}", "tune.batch_size=[4, 8]")
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    from fgdepth.tuning import suggest

    params = suggest(trial, config)
    assert {"schedule", "loss_weight_mask", "batch_size"} <= set(params)
    out = apply_params(config, params)
    assert out.loss_weights["mask"] == params["loss_weight_mask"]
    assert out.batch_size == params["batch_size"]


SHARES = ["tune.schedules=[]", "tune.time_shares={sizes: [48, 64, 96, 128, 192]}"]


def compute(stage) -> int:
    return stage.samples * stage.epochs * stage.size**2


def test_time_shares_give_each_drawn_size_its_part_of_the_recipes_compute():
    config = load_config("default", "cpu", SHARES)  # cpu: 96 px at most, 192 px left out
    assert [s.size for s in config.stages] == [48, 64, 96, 192]
    whole = sum(compute(s) for s in config.stages[:3])
    out = apply_params(config, {"share_48": 0.6, "share_64": 0.0, "share_96": 0.2})
    # 75 % and 25 %; a stage of a size the recipe has takes its epochs and learning rate
    assert [(s.name, s.size, s.epochs, s.optimizer.get("lr")) for s in out.stages] == [
        ("s48", 48, 2, None), ("s96", 96, 2, 0.002),
    ]  # fmt: skip
    parts = [compute(s) / whole for s in out.stages]
    assert parts == pytest.approx([0.75, 0.25], abs=1e-5)  # to a sample's rounding
    # a size the recipe has no stage of: the nearest stage's keys and tune.time_shares.epochs
    full = load_config("default", "full", SHARES)
    (s128,) = apply_params(full, {"share_128": 1.0}).stages
    assert (s128.name, s128.size, s128.epochs, s128.optimizer["lr"]) == ("s128", 128, 2, 0.002)
    assert compute(s128) == pytest.approx(sum(compute(s) for s in full.stages), rel=1e-5)


@pytest.mark.parametrize(
    ("shares", "sizes"),
    [
        ({"share_48": 0.05, "share_64": 0.45, "share_96": 0.5}, [64, 96]),  # under min_share
        ({"share_48": 0.0, "share_64": 0.0, "share_96": 0.0}, [48, 64, 96]),  # all: equal
        ({"share_48": 0.0, "share_64": 0.0, "share_96": 1e-9}, [96]),
    ],
)
def test_a_size_given_too_little_of_the_time_is_left_out(shares, sizes):
    config = load_config("default", "cpu", SHARES)
    out = apply_params(config, shares)
    assert [s.size for s in out.stages] == sizes
    whole = sum(compute(s) for s in config.stages[:3])
    assert sum(compute(s) for s in out.stages) == pytest.approx(whole, rel=1e-4)


@pytest.mark.parametrize("profile", ["cpu", "full"])
def test_time_shares_are_drawn_for_the_sizes_the_profile_trains(profile):
    config = load_config("default", profile, SHARES)
    trial = optuna.create_study(direction="maximize").ask()
    from fgdepth.tuning import suggest

    params = suggest(trial, config)
    drawn = sorted(int(k.split("_")[1]) for k in params if k.startswith("share_"))
    assert drawn == ([48, 64, 96] if profile == "cpu" else [48, 64, 96, 128, 192])
    stages = apply_params(config, params).stages
    assert {f"lr_stage{i}" for i in range(len(stages))} == {k for k in params if "lr_" in k}
    assert [s.optimizer["lr"] for s in stages] == [params[f"lr_stage{i}"] for i in
                                                    range(len(stages))]  # fmt: skip


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["tune.time_shares={sizes: [64]}"], "time_shares and schedules are both set"),
        ([*SHARES[:1], "tune.time_shares={sizes: [64, 64]}"], "need distinct sizes"),
        ([*SHARES, "tune.time_shares.min_share=1"], "is not in \\[0, 1\\)"),
        ([*SHARES[:1], "tune.time_shares={sizes: [50, 64]}"], "multiples of 16"),
        (
            ["tune.lr=null", "tune.schedules=[]", "tune.loss_weights={}", "tune.batch_size=[]"],
            "has no search space",
        ),
        (["tune.pruner.name=median2"], "unknown 'median2'; valid: hyperband, median, none"),
        (["tune.sampler=grid"], "valid: random, tpe"),
        (["tune.schedules=[[{sise: 64}]]"], "did you mean 'size'"),
        (["tune.schedules=[[{size: 50}]]"], "multiples of 16"),
        (["tune.lr={low: 0.1, high: 0.01}"], "need 0 < low < high"),
        (["tune.trials=0"], "at least 1"),
    ],
)
def test_a_bad_search_space_fails_with_one_line_before_any_trial(sets, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_space(smoke(*sets))
    assert "\n" not in str(err.value)


VAL = {"mask_iou": 0.9, "depth_rmse": 0.1, "fg_distance_error": 0.05}


def test_the_score_rewards_iou_and_penalises_depth_and_distance_error():
    objective = smoke().tune.objective
    assert score(VAL, objective) == pytest.approx(0.75)
    heavy = dataclasses.replace(objective, depth_rmse_weight=4.0)
    assert score(VAL, heavy) == pytest.approx(0.45)


@pytest.mark.parametrize(
    ("weight", "value", "text"),
    [
        ("1", 0.75, "1 * mask_iou - 1 * depth_rmse - 1 * fg_distance_error"),
        ("2", 0.70, "1 * mask_iou - 1 * depth_rmse - 2 * fg_distance_error"),
        ("0", 0.80, "1 * mask_iou - 1 * depth_rmse"),
    ],
)
def test_the_distance_weight_set_on_the_command_line_changes_the_score(weight, value, text):
    config = smoke(f"tune.objective.fg_distance_weight={weight}")  # as --set passes it
    objective = config.tune.objective
    assert score(VAL, objective) == pytest.approx(value)
    assert formula(objective) == text
    assert objectives(objective) == {text: "maximize"}  # one objective, named by its formula
    assert study_params(config, "e", "s", "x", 1)["objective"] == f"{text} (validation)"


def test_the_formula_writes_each_sign_once_and_leaves_out_weights_of_zero():
    objective = dataclasses.replace(
        smoke().tune.objective, mask_iou_weight=0.0, depth_rmse_weight=0.5, fg_distance_weight=-2
    )
    assert formula(objective) == "-0.5 * depth_rmse + 2 * fg_distance_error"
    assert score(VAL, objective) == pytest.approx(-0.05 + 0.1)  # mask_iou is not read


def test_every_weight_zero_is_refused_before_any_trial():
    sets = [f"tune.objective.{k}=0" for k in ("mask_iou_weight", "depth_rmse_weight",
                                             "fg_distance_weight")]  # fmt: skip
    with pytest.raises(ConfigError, match="every weight is 0"):
        check_space(smoke(*sets))


@pytest.mark.parametrize(
    ("sets", "names", "directions"),
    [
        ([], ["mask_iou", "depth_rmse", "fg_distance_error"], ["maximize", "minimize", "minimize"]),
        (["tune.objective.fg_distance_weight=0"], ["mask_iou", "depth_rmse"],
         ["maximize", "minimize"]),
    ],
)  # fmt: skip
def test_several_objectives_are_the_metrics_of_non_zero_weight(tmp_path, sets, names, directions):
    config = smoke("tune.objective.multi=true", *sets)
    study = create_study(config, "mo", f"sqlite:///{tmp_path}/optuna.db")
    assert [d.name.lower() for d in study.directions] == directions
    assert study.metric_names == names
    values = objective_values({**VAL, "depth_ssim": 0.7}, config.tune.objective)
    assert values == tuple(VAL[n] for n in names)
    label = study_params(config, "e", "s", "x", 1)["objective"]
    assert label.startswith("mask_iou up, depth_rmse down")
    assert label.endswith(f"by {formula(config.tune.objective)})")


def test_a_study_made_for_another_objective_is_refused_with_one_line(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    create_study(smoke("tune.objective.multi=true"), "mo", storage)  # three objectives
    two = smoke("tune.objective.multi=true", "tune.objective.fg_distance_weight=0")
    with pytest.raises(ConfigError, match="exists with directions") as err:
        create_study(two, "mo", storage)
    assert "\n" not in str(err.value)
    create_study(two, "two", storage)
    same_directions = smoke(
        "tune.objective.multi=true", "tune.objective.depth_rmse_weight=0",
        "tune.objective.fg_distance_weight=1",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="exists with objectives"):  # mask_iou, distance
        create_study(same_directions, "two", storage)
    single = create_study(smoke(), "one", storage)
    assert single.metric_names == ["1 * mask_iou - 1 * depth_rmse - 1 * fg_distance_error"]
    assert create_study(smoke(), "one", storage).study_name == "one"  # continued


def test_the_best_of_three_objectives_is_the_pareto_trial_with_the_best_score():
    config = smoke("tune.objective.multi=true", "tune.objective.fg_distance_weight=4")
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    label = schedule_label(config.tune.schedules[0])
    dist = {"schedule": optuna.distributions.CategoricalDistribution([label])}
    for values in ([0.9, 0.1, 0.10], [0.8, 0.1, 0.01], [0.7, 0.2, 0.02]):  # scores .4, .66, .42
        study.add_trial(optuna.create_trial(params={"schedule": label}, distributions=dist,
                                            values=values))  # fmt: skip
    _, trial = best_config(config, study)
    assert trial.number == 1


def test_every_pruner_builds():
    cfg = smoke().tune.pruner
    for name in PRUNERS.names():
        assert isinstance(PRUNERS.build(name, cfg=cfg), optuna.pruners.BasePruner)


def test_the_pruning_callback_reports_each_epoch_and_stops_when_told():
    class Trial:
        def __init__(self, prune_at):
            self.reported, self.prune_at = [], prune_at

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return len(self.reported) > self.prune_at

    def epoch(step, iou):
        val = {"mask_iou": iou, "depth_rmse": 0.1, "fg_distance_error": 0.05}
        return EpochResult(0, "s", step, step, {}, val, 0.01, 1.0, 1.0)

    trial = Trial(prune_at=1)
    cb = PruningCallback(trial, smoke().tune.objective)
    cb.on_epoch_end(epoch(0, 0.5), None)
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 1"):
        cb.on_epoch_end(epoch(1, 0.6), None)
    assert trial.reported == [(0, pytest.approx(0.35)), (1, pytest.approx(0.45))]


def test_with_validations_within_training_the_steps_are_shares_of_the_time():
    """Every schedule is judged at the same minutes of training: the score goes to the
    pruner at each share (step 1, 2, ...), not at epoch ends, whose minutes differ."""

    class Trial:
        def __init__(self):
            self.reported = []

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return len(self.reported) == 2

    val = {"mask_iou": 0.5, "depth_rmse": 0.1, "fg_distance_error": 0.05}
    trial = Trial()
    cb = PruningCallback(trial, smoke().tune.objective, by_share=True)
    cb.on_progress(ProgressResult(0, 0, 1, 10, val), None)
    cb.on_epoch_end(EpochResult(0, "s", 0, 0, {}, val, 0.01, 1.0, 1.0), None)
    with pytest.raises(optuna.TrialPruned, match="pruned at 2/10 of its time"):
        cb.on_progress(ProgressResult(0, 1, 2, 10, val), None)
    assert trial.reported == [(1, pytest.approx(0.35)), (2, pytest.approx(0.35))]


@pytest.mark.parametrize(
    "sets, reports",
    [
        (["train_minutes=2"], 10),
        (["train_minutes=2", "tune.pruner.reports=4"], 4),
        (["train_minutes=2", "tune.pruner.reports=1"], 0),  # each epoch's end instead
        (["train_minutes=2", "tune.pruner.name=none"], 0),  # nothing to judge
        (["train_minutes=2", "tune.objective.multi=true"], 0),  # Optuna prunes one only
        ([], 0),  # no training time to share
    ],
)
def test_a_trial_is_validated_at_the_pruners_shares_of_its_time(sets, reports):
    config = smoke(*sets)
    trial = trial_config(apply_params(config, {}))
    assert trial.eval.val_reports == reports
    assert config.eval.val_reports == 0  # the study's recipe (best.yaml, --compare) is not


def test_a_spent_time_budget_prunes_the_trial_under_way_once_a_trial_has_completed():
    """Before any trial completed, the trial under way is the study's only chance of a best
    configuration: it goes on past the budget; after one has, it is pruned at the budget."""
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    val = {"mask_iou": 0.5, "depth_rmse": 0.1, "fg_distance_error": 0.05}
    result = EpochResult(0, "s", 0, 0, {}, val, 0.01, 1.0, 1.0)
    objective = smoke().tune.objective
    PruningCallback(study.ask(), objective, deadline=time.time() - 1).on_epoch_end(result, None)
    study.add_trial(optuna.create_trial(value=0.1))  # a completed trial
    PruningCallback(study.ask(), objective, deadline=time.time() + 60).on_epoch_end(result, None)
    with pytest.raises(optuna.TrialPruned, match="time budget is spent"):
        PruningCallback(study.ask(), objective, deadline=time.time() - 1).on_epoch_end(result, None)


@pytest.mark.parametrize("experiment", ["default", "bce_ssim"])
def test_a_new_study_first_tries_the_recipe_it_tunes(tmp_path, experiment):
    """The recipe as a point of its own search space: its schedule, learning rates, loss
    weights and batch size give back its stages and weights; a new study has it queued as
    its first trial, a continued one does not get it again."""
    config = load_config(experiment, "cpu")
    own = recipe_params(config)
    assert {"schedule", "lr_stage0", "loss_weight_mask", "batch_size"} <= set(own)
    again = apply_params(config, own)

    def recipe(c):  # each stage as it trains: its size, samples, epochs and peak learning rate
        lr = c.optimizer.lr
        return [(s.size, s.samples, s.epochs, s.optimizer.get("lr", lr)) for s in c.stages]

    assert recipe(again) == recipe(config) and again.loss_weights == config.loss_weights
    assert again.batch_size == config.batch_size
    # in a space of time shares too: the stages the profile trains, each its part of the time
    shares = load_config(experiment, "cpu", SHARES)
    own_shares = recipe_params(shares)
    assert {"share_48", "share_64", "share_96"} <= set(own_shares) and "schedule" not in own_shares
    trained = [s for s in shares.stages if s.size <= 96]
    assert recipe(apply_params(shares, own_shares))[:3] == recipe(dataclasses.replace(
        shares, stages=trained))  # fmt: skip
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = open_study(config, "s", storage, print_fn=lambda line: None)
    (queued,) = study.get_trials()
    assert queued.state == TrialState.WAITING and queued.system_attrs["fixed_params"] == own
    assert len(open_study(config, "s", storage, print_fn=lambda line: None).get_trials()) == 1


# --- the leaders trained again ----------------------------------------------------------------


def _scored(values: list[float], attrs: dict[int, dict] | None = None) -> optuna.Study:
    """A study of completed trials, trial i with learning rate i and score ``values[i]``,
    ``attrs[i]`` its user attributes."""
    study = optuna.create_study(direction="maximize")
    dist = {"lr_stage0": optuna.distributions.FloatDistribution(0.0, 100.0)}
    for i, value in enumerate(values):
        params = {"lr_stage0": float((attrs or {}).get(i, {}).get("lr", i))}
        user = {k: v for k, v in (attrs or {}).get(i, {}).items() if k != "lr"}
        study.add_trial(optuna.create_trial(params=params, distributions=dist, value=value,
                                            user_attrs=user))  # fmt: skip
    return study


def test_the_leaders_are_the_best_first_runs_and_the_recipe_each_set_of_values_once():
    # trial 0 the recipe (last on value), trial 3 the same values as trial 1
    study = _scored([0.60, 0.71, 0.70, 0.72, 0.65], {0: {RECIPE: "default"}, 3: {"lr": 1}})
    assert [t.number for t in leaders(study, 2)] == [3, 2, 0]
    queue_reruns(study, leaders(study, 2))
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[RERUN_OF] for t in waiting] == [3, 2, 0]
    assert [t.system_attrs["fixed_params"]["lr_stage0"] for t in waiting] == [1.0, 2.0, 0.0]
    assert leaders(study, 2) == []  # queued once: a continued study does not queue them again


def test_with_reruns_the_best_is_the_best_mean_of_a_trials_runs():
    # trial 1 the luckiest first run; with its rerun it falls behind trial 2's two runs
    study = _scored([0.60, 0.75, 0.72, 0.66, 0.70, 0.60],
                    {3: {RERUN_OF: 1, "lr": 1}, 4: {RERUN_OF: 2, "lr": 2},
                     5: {RERUN_OF: 0, "lr": 0}})  # fmt: skip
    assert runs_of(study) == {0: [0.60, 0.60], 1: [0.75, 0.66], 2: [0.72, 0.70]}
    trial, value = best_trial(study)
    assert (trial.number, value) == (2, pytest.approx(0.71))
    study.add_trial(optuna.create_trial(  # trial 1 run a third time
        params={"lr_stage0": 1.0}, value=0.80, user_attrs={RERUN_OF: 1},
        distributions={"lr_stage0": optuna.distributions.FloatDistribution(0.0, 100.0)},
    ))  # fmt: skip
    trial, value = best_trial(study)
    assert (trial.number, value) == (1, pytest.approx((0.75 + 0.66 + 0.80) / 3))
    assert best_trial(_scored([0.6, 0.7]))[0].number == 1  # no reruns: Optuna's best


@pytest.mark.parametrize(
    ("sets", "trial_s", "expected"),
    [
        (["tune.minutes=60", "tune.confirm=2"], 174.0, 2),  # 3 reruns: 8.7 of 60 min
        (["tune.minutes=10", "tune.confirm=2"], 174.0, 0),  # 8.7 of 10 min: over a third
        (["tune.confirm=2"], 174.0, 0),  # no time budget: the trials asked for, once each
        (["tune.minutes=60", "tune.confirm=0"], 174.0, 0),
        (["tune.minutes=60", "tune.confirm=2", "tune.objective.multi=true"], 174.0, 0),
    ],
)
def test_the_budget_keeps_time_for_the_reruns_only_where_they_fit(sets, trial_s, expected):
    config = smoke("train_minutes=2.35", *sets)
    assert confirmations(config, trial_s) == expected
    line = expectation(config, "bce_ssim", trial_s, 1, expected)
    assert ("trained again with another seed" in line) == bool(expected)


def test_a_negative_number_of_reruns_is_refused():
    with pytest.raises(ConfigError, match="tune.confirm: must be 0 or more, got -1"):
        check_space(smoke("tune.confirm=-1"))


def test_database_passwords_are_masked():
    assert masked("postgresql://bob:s3cret@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert masked("sqlite:///optuna.db") == "sqlite:///optuna.db"
    assert masked("journal:/tmp/j.log") == "journal:/tmp/j.log"


def test_a_retried_trial_counts_once():
    study = optuna.create_study()
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for state in (TrialState.COMPLETE, TrialState.FAIL):
        study.add_trial(
            optuna.create_trial(state=state, params={"x": 0.5}, distributions=dist, value=1.0)
            if state == TrialState.COMPLETE
            else optuna.create_trial(state=state, params={"x": 0.5}, distributions=dist)
        )
    assert trials_to_go(study, 4) == 2  # a complete and a failed trial both ended
    retry = optuna.create_trial(
        state=TrialState.WAITING,
        params={"x": 0.5},
        distributions=dist,
        system_attrs={"failed_trial": 1, "retry_history": [1]},
    )
    study.add_trial(retry)
    assert trials_to_go(study, 4) == 3  # the failed trial comes back as its retry


class _Tags:
    def __init__(self):
        self.tagged = []

    def tag_run(self, run_id, tags):
        self.tagged.append((run_id, tags))


@pytest.mark.parametrize(
    ("state", "queued"),
    [  # where the signal found the trial: running (Optuna never told), failed by Optuna, done
        (None, True), (TrialState.FAIL, True), (TrialState.COMPLETE, False),
    ],
)  # fmt: skip
def test_a_trial_a_signal_stopped_fails_and_is_queued_again_with_its_values(state, queued):
    from fgdepth.tuning.workers import _retry_stopped

    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.set_user_attr("mlflow_run_id", "r1")
    if state is not None:
        study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    trainer = _Tags()
    _retry_stopped(study, trial.number, trainer)
    trials = study.get_trials()
    assert trials[0].state == (state or TrialState.FAIL)
    assert len(trials) == 1 + queued
    if queued:
        assert trials[1].state == TrialState.WAITING and trials[1].params == trials[0].params
        assert trainer.tagged == [("r1", {"optuna.state": "FAIL"})]
        assert trials_to_go(study, 2) == 2  # the stopped trial counts as its retry, not twice


def test_the_best_configuration_is_a_ready_to_run_experiment(tmp_path):
    import yaml

    config = smoke()
    params = {"schedule": schedule_label(config.tune.schedules[2]), "lr_stage0": 0.005}
    tuned = apply_params(config, params)
    doc = best_experiment(tuned, params, "bce_ssim", trial=7, study="s")
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(doc))
    again = load_config(path, "smoke")
    assert again.name == "bce_ssim_tuned"
    assert again.stages == tuned.stages
    assert again.loss == config.loss  # inherited from bce_ssim


# the search space of a study that tunes everything: loss weights and batch size too
EVERYTHING = ["tune.loss_weights={mask: {low: 0.5, high: 4}}", "tune.batch_size=[16, 32]"]


@pytest.mark.parametrize(
    "params",
    [
        {"lr_stage0": 0.005, "lr_stage2": 0.0007, "loss_weight_mask": 3.0},
        {"schedule": "96px/120000x3", "lr_stage0": 0.02, "batch_size": 32},
    ],
)
def test_best_yaml_holds_the_tuned_values_at_the_original_scale_not_the_profiles(tmp_path, params):
    """A smoke study's best trial, trained at `cpu`: what `--profile cpu` of its experiment
    trains, with the tuned values; nothing of the smoke profile (its batches of 8, its data)."""
    import yaml

    study = smoke(*EVERYTHING)  # batches of 8
    doc = best_experiment(apply_params(study, params), params, "bce_ssim", trial=3, study="s")
    assert doc.get("batch_size") == params.get("batch_size")  # written only when tuned
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(doc))
    best = load_config(path, "cpu")
    expected = apply_params(load_config("bce_ssim", "cpu", EVERYTHING), params)
    assert best.batch_size == params.get("batch_size", 16)  # the recipe's unless tuned
    for key in ("name", "description", "tune"):  # best.yaml's own name; the study's space
        best, expected = (dataclasses.replace(c, **{key: None}) for c in (best, expected))
    assert best == expected


# --- the data a study tunes on ---------------------------------------------------------------

A, B = StudyData("aaaa1111", "/data/a"), StudyData("bbbb2222", "the built-in data synth-n40")
STORAGES = {"sqlite": "sqlite:///{tmp}/optuna.db", "journal": "journal:{tmp}/journal.log"}


def test_the_default_study_name_holds_the_data_key_and_a_given_name_is_kept():
    assert study_name(smoke(), None, A.key) == "bce_ssim-smoke-aaaa1111"
    assert study_name(smoke(), "mine", A.key) == "mine"


@pytest.mark.parametrize("storage", list(STORAGES))
def test_a_study_refuses_other_data_unless_forced_and_records_it(tmp_path, storage):
    check_study_data(STORAGES[storage].format(tmp=tmp_path))


def check_study_data(url: str) -> None:
    """A study records its data; on other data it is refused in one line, or with
    ``force_data`` continued, which it records once and says each time."""
    said: list[str] = []
    study = open_study(smoke(), "s", url, data=A, print_fn=lambda line: None)  # a new study
    assert study.user_attrs == {DATA: A.key, DATA_PATH: A.where}
    open_study(smoke(), "s", url, data=A, print_fn=said.append)  # the same data: continued
    assert said == []
    with pytest.raises(ConfigError) as refused:
        open_study(smoke(), "s", url, data=B)
    assert str(refused.value) == (
        "study 's' was tuned on other data or splits (aaaa1111, /data/a); this data is "
        "bbbb2222 (the built-in data synth-n40): leave out --study for a study of its own, or "
        "add --force-data to continue it on this data"
    )
    for _ in range(2):
        study = open_study(smoke(), "s", url, data=B, force_data=True, print_fn=said.append)
    mixes = (
        "study 's' mixes data: tuned on aaaa1111, /data/a, continued (--force-data) on "
        "bbbb2222 (the built-in data synth-n40)"
    )
    assert said == [mixes, mixes]
    assert study.user_attrs[DATA] == A.key  # still the study's own data
    assert study.user_attrs[DATA_FORCED] == [{"key": B.key, "path": B.where}]


@pytest.mark.parametrize("storage", list(STORAGES))
def test_a_study_made_before_studies_recorded_their_data_takes_this_data(tmp_path, storage):
    url = STORAGES[storage].format(tmp=tmp_path)
    old = optuna.create_study(study_name="old", storage=open_storage(url), direction="maximize")
    old.optimize(lambda trial: 0.5, n_trials=1)
    said: list[str] = []
    study = open_study(smoke(), "old", url, data=A, print_fn=said.append)
    assert said == ["study 'old' had no record of its data: taken to be this data, aaaa1111 "
                    "(/data/a)"]  # fmt: skip
    assert (study.user_attrs[DATA], study.user_attrs[DATA_PATH]) == (A.key, A.where)
    with pytest.raises(ConfigError, match="was tuned on other data"):
        open_study(smoke(), "old", url, data=B)


# --- studies tracked in MLflow ---------------------------------------------------------------


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """A fresh MLflow store (created here, from one process) and an Optuna SQLite URL."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    return uri, f"sqlite:///{tmp_path}/optuna.db"


def children(uri: str, parent: str):
    client = MlflowClient(uri)
    exp = client.get_run(parent).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")


@pytest.mark.slow
def test_a_study_is_one_parent_run_with_a_child_run_per_trial(stores, tmp_path):
    uri, storage = stores
    outcome = tune(smoke("tune.trials=3"), "bce_ssim", study_name="t", storage=storage)
    client = MlflowClient(uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_complete"] == 3
    assert parent.data.metrics["best_value"] == pytest.approx(outcome.best_value)
    assert {f"best.{k}" for k in outcome.best_params} <= set(parent.data.params)
    objective = "1 * mask_iou - 1 * depth_rmse - 1 * fg_distance_error (validation)"
    assert parent.data.params["objective"] == parent.data.tags["fgdepth.objective"] == objective
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best.yaml", "trials.csv", "trials.html", "optimization_history.png"} <= logged
    assert "param_importances.png" in logged

    runs = children(uri, parent.info.run_id)
    trials = outcome.study.get_trials()
    assert len(runs) == len(trials) == 3
    by_id = {r.info.run_id: r for r in runs}
    for t in trials:
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["optuna.trial"] == str(t.number)
        assert run.data.tags["optuna.state"] == "COMPLETE"
        for key, value in t.params.items():
            assert run.data.tags[f"optuna.param.{key}"] == str(value)
        assert "test_mask_iou" in run.data.metrics
    best = load_config(outcome.best_yaml, "smoke")
    assert best.stages == apply_params(smoke(), outcome.best_params).stages

    again = tune(smoke("tune.trials=4"), "bce_ssim", study_name="t", storage=storage)
    assert len(again.study.get_trials()) == 4  # continued, not restarted
    assert len(children(uri, again.parent_run_id)) == 1


@pytest.mark.slow
def test_a_study_trains_its_leaders_again_with_another_seed_and_picks_the_best_mean(
    stores, monkeypatch
):
    """Two trials (the recipe, then a sampled one), then with one leader to confirm: it and
    the recipe (one trial if the recipe leads) trained again with seed + 1, each rerun a
    child run of its own; the best is the best mean, and best.yaml says so."""
    uri, storage = stores
    monkeypatch.setattr("fgdepth.app.tune.confirmations", lambda config, trial_s: 1)
    lines: list[str] = []
    config = smoke("tune.trials=2", "tune.confirm=1")
    outcome = tune(config, "bce_ssim", study_name="c", storage=storage, print_fn=lines.append)
    trials = outcome.study.get_trials()
    assert RECIPE in trials[0].user_attrs
    leader = max(trials[:2], key=lambda t: t.value).number
    again = [leader] if leader == 0 else [1, 0]  # the leader, then the recipe if another
    assert [t.user_attrs.get(RERUN_OF) for t in trials] == [None, None, *again]
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    means = {n: (trials[n].value + trials[2 + i].value) / 2 for i, n in enumerate(again)}
    best = max(means, key=means.get)
    assert (outcome.best_trial, outcome.best_value) == (best, pytest.approx(means[best]))
    assert any(line.startswith("trained again with seed 1") for line in lines)
    runs = {r.data.tags["optuna.trial"]: r for r in children(uri, outcome.parent_run_id)}
    assert runs["2"].data.tags[RERUN_OF] == str(leader) and runs["2"].data.params["seed"] == "1"
    assert trials[2].params == trials[leader].params and runs["0"].data.params["seed"] == "0"
    assert "mean of 2 runs' score" in outcome.best_yaml.read_text()


def raise_at_high_lr(monkeypatch, error: Exception) -> None:
    """Training raises ``error`` in an epoch whose learning rate is above 0.5."""
    fit_module = importlib.import_module("fgdepth.engine.fit")  # the package exports fit()
    real_epoch = fit_module.train_epoch

    def epoch(run, *args):
        if run.opt.defaults["lr"] > 0.5:
            raise error
        return real_epoch(run, *args)

    monkeypatch.setattr(fit_module, "train_epoch", epoch)


@pytest.mark.slow
def test_pruned_trials_end_killed_and_failed_ones_failed_with_the_reason(stores, monkeypatch):
    uri, storage = stores
    # reported after each epoch (a smoke trial's few batches may fall within one tenth)
    sets = ("tune.trials=3", "tune.schedules=[]", "tune.lr.high=1.0", "tune.pruner.reports=1")
    config = smoke(*sets)
    study = create_study(config, "pf", storage, 60)
    study.enqueue_trial({"lr_stage0": 0.9, "lr_stage1": 0.01, "lr_stage2": 0.01})

    # a NaN loss at a learning rate that is far too high
    raise_at_high_lr(monkeypatch, DivergenceError("loss became nan in stage 's64' at batch 0"))
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: self.number == 1)
    outcome = tune(config, "bce_ssim", study_name="pf", storage=storage)

    states = [t.state for t in outcome.study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.PRUNED, TrialState.COMPLETE]
    assert outcome.counts == {"complete": 1, "pruned": 1, "fail": 1}
    client = MlflowClient(uri)
    runs = {int(r.data.tags["optuna.trial"]): r for r in children(uri, outcome.parent_run_id)}
    assert runs[0].info.status == "FAILED"
    assert "DivergenceError: loss became nan" in runs[0].data.tags["fgdepth.failure"]
    assert runs[0].data.tags["optuna.state"] == "FAIL"
    assert runs[1].info.status == "KILLED"
    assert runs[1].data.tags["fgdepth.stopped"].startswith("pruned at epoch 0")
    assert runs[1].data.tags["optuna.state"] == "PRUNED"
    assert "val_mask_iou" in runs[1].data.metrics  # its curve up to the pruning is kept
    assert runs[2].info.status == "FINISHED"
    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.metrics["trials_pruned"] == parent.data.metrics["trials_fail"] == 1


@pytest.mark.slow
def test_a_trial_that_raises_fails_with_its_error_and_the_study_goes_on(stores, monkeypatch):
    uri, storage = stores
    config = smoke("tune.trials=2", "tune.schedules=[]", "tune.lr.high=1.0")
    study = create_study(config, "raises", storage, 60)
    study.enqueue_trial({"lr_stage0": 0.9, "lr_stage1": 0.01, "lr_stage2": 0.01})
    # a crash that these values reach, not a divergence
    raise_at_high_lr(monkeypatch, ValueError("Expected more than 1 value per channel"))
    outcome = tune(config, "bce_ssim", study_name="raises", storage=storage)
    assert [t.state for t in outcome.study.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]
    runs = {int(r.data.tags["optuna.trial"]): r for r in children(uri, outcome.parent_run_id)}
    assert runs[0].info.status == "FAILED"
    assert "ValueError: Expected more than 1 value" in runs[0].data.tags["fgdepth.failure"]


def test_a_worker_starts_no_more_trials_after_three_fail_in_a_row(stores, monkeypatch, caplog):
    _, storage = stores
    fit_module = importlib.import_module("fgdepth.engine.fit")

    def crashing(*args):
        raise ValueError("a bug every trial reaches")

    monkeypatch.setattr(fit_module, "train_epoch", crashing)
    with pytest.raises(NoTrialCompleted, match=r"no trial completed \(3 fail\)"):
        tune(smoke("tune.trials=6"), "bce_ssim", study_name="bug", storage=storage)
    assert "3 trials in a row failed: no more trials are started" in caplog.text


@pytest.mark.slow
def test_two_worker_processes_share_a_journal_study(stores, tmp_path):
    uri, _ = stores
    outcome = tune(
        smoke("tune.trials=4"),
        "bce_ssim",
        study_name="j",
        storage=f"journal:{tmp_path}/journal.log",
        workers=2,
    )
    _check_shared_study(uri, outcome, 4, 2)


def _check_shared_study(uri, outcome, target, workers):
    """Every trial ended exactly once, by one of the workers, with one MLflow child run."""
    trials = outcome.study.get_trials()
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    # workers that look at the count at the same moment may each start the last trial
    assert target <= len(trials) <= target + workers - 1
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    # trials ran in the worker processes (which of them ran how many depends on timing)
    coordinator = trials[0].user_attrs["coordinator"]
    assert all(t.user_attrs["worker"] != coordinator for t in trials)
    assert outcome.exit_codes == [0] * workers
    runs = children(uri, outcome.parent_run_id)
    assert sorted(r.info.run_id for r in runs) == sorted(
        t.user_attrs["mlflow_run_id"] for t in trials
    )
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}
    state = {t.user_attrs["mlflow_run_id"]: t.state.name for t in trials}
    assert all(r.info.status == status[state[r.info.run_id]] for r in runs)


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study_on_loopback(tmp_path):
    import json
    import shutil
    import urllib.request

    from tests.services import http_server, missing

    if shutil.which("optuna-dashboard") is None:
        missing("optuna-dashboard is not installed (pip install 'fgdepth[dashboard]')")
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="dash", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("lr_stage0", 0.001, 0.01), n_trials=2)
    args = ["optuna-dashboard", storage, "--host", "127.0.0.1", "--port", "{port}"]
    with http_server(args, "/api/studies", tmp_path / "dashboard.log") as base:
        with urllib.request.urlopen(f"{base}/api/studies") as response:
            studies = json.load(response)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["dash"]


@pytest.mark.slow
def test_several_objectives_report_a_pareto_front_and_the_best_trains_as_a_normal_run(stores):
    import subprocess
    import sys

    uri, storage = stores
    done = subprocess.run(
        [sys.executable, "-m", "fgdepth", "tune", "--experiment", "bce_ssim", "--profile",
         "smoke", "--trials", "3", "--multi-objective", "--storage", storage, "--study", "mo",
         "--train-best", "smoke"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="mo", storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["mask_iou", "depth_rmse", "fg_distance_error"]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)  # no pruning here
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("fgdepth").experiment_id
    parent = client.search_runs([exp], "tags.`fgdepth.kind` = 'tune'")[0]
    assert {"best_mask_iou", "best_depth_rmse", "best_fg_distance_error"} <= set(
        parent.data.metrics
    )
    assert parent.data.tags["fgdepth.objective"].startswith(
        "mask_iou up, depth_rmse down, fg_distance_error down (validation"
    )
    assert "pareto_front.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    best = client.search_runs([exp], "tags.`fgdepth.tuned` = 'best'")
    assert len(best) == 1 and best[0].info.status == "FINISHED"
    assert "mlflow.parentRunId" not in best[0].data.tags  # a normal run, not a trial
    assert best[0].data.params["name"] == "bce_ssim_tuned"


@pytest.mark.parametrize("multi", [False, True])
def test_the_summary_draws_the_plots_as_one_interactive_page(tmp_path, multi):
    pytest.importorskip("plotly")
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from fgdepth.tuning import objectives
    from fgdepth.tuning.summary import write_summary

    config = smoke(f"tune.objective.multi={str(multi).lower()}")
    names = list(objectives(config.tune.objective))
    study = optuna.create_study(directions=list(objectives(config.tune.objective).values()))
    study.set_metric_names(names)
    lr = FloatDistribution(1e-4, 1e-1, log=True)
    for i, value in enumerate((0.2, 0.5, 0.4, 0.7)):
        values = [value + k / 10 for k in range(len(names))]
        study.add_trial(create_trial(params={"lr": 10 ** -(i + 1)}, distributions={"lr": lr},
                                     values=values, intermediate_values={0: value}))  # fmt: skip
    files = write_summary(study, config, tmp_path)
    page = files["plots.html"].read_text()
    assert page.count("<h2>") >= 3 and "optimization history" in page
    assert page.count("plotly.js v") <= 1  # the library once, inside the page
    assert "Plotly.newPlot" in page and names[0] in page  # the objective by its name
    assert "optimization_history.png" in files  # beside the pictures
