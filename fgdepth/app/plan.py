"""``fgdepth train --plan``: what a run would do (stages, data modes, cache bytes, disk, time
per epoch from a few timed steps), without training."""

from __future__ import annotations

import sys

from fgdepth.app.datasets import builtin_exists, is_builtin, resolve_dataset
from fgdepth.config import Config


def _planned_shape(config: Config):
    """The dataset's ``DataShape`` and train rows; the built-in one is described from its
    spec when it has not been generated yet (``--plan`` generates nothing)."""
    from fgdepth.data.modes import DataShape, data_shape

    data = config.data
    if is_builtin(config) and not builtin_exists(config):
        spec = data.synth
        train = round(spec.n * (1 - data.test - data.val))
        return DataShape(spec.n, spec.n_backgrounds, spec.size), spec.n, train, "builtin"
    dataset = resolve_dataset(config)
    shape = data_shape(dataset)
    return shape, len(dataset), len(dataset.indices("train")), str(dataset.path)


def stage_rates(config: Config, stages: list, device, precision: str, steps: int) -> list[float]:
    """Training samples/s of each stage from ``steps`` timed steps (0: none, all 0), with a
    progress bar on a console; stages that differ only in rows and epochs are timed once."""
    from dataclasses import replace

    from tqdm import tqdm

    from fgdepth.engine.timing import training_rate

    rates: dict[str, float] = {}
    out = []
    # on stderr, piped or not: stdout may be the plan's JSON
    bar = tqdm(stages, desc="timing steps", leave=False, disable=not steps, file=sys.stderr)
    for stage in bar:
        bar.set_description(f"timing steps: stage {stage.name or '-'} {stage.size} px")
        same = repr(replace(stage, name="", samples=1, epochs=1, init_from=None))  # what it timed
        if same not in rates:
            rates[same] = training_rate(config, stage, device, precision, steps) if steps else 0
        out.append(rates[same])
    return out


def plan_report(config: Config, timed_steps: int = 3) -> dict:
    """What a run of ``config`` would do, without training: per stage its size, rows, data
    mode and cache bytes, an estimated time per epoch from a few timed steps here, and the
    free disk."""
    from dataclasses import replace

    from fgdepth.config import ConfigError, scaled_stages
    from fgdepth.data import cache_root
    from fgdepth.data.modes import room_for_caches
    from fgdepth.engine.fit import default_device
    from fgdepth.engine.plan import check_samples, plan_data
    from fgdepth.engine.precision import resolve_precision
    from fgdepth.models import build_model

    shape, rows, train_rows, where = _planned_shape(config)
    stages, refused = scaled_stages(config), None
    try:
        stages = check_samples(config, stages, train_rows)
    except ConfigError as exc:  # planned anyway, on the rows there are; training would refuse
        refused = str(exc)
        stages = [replace(s, samples=min(s.samples, train_rows)) for s in stages]
    scale = build_model(config.model.name, **config.model.options).input_scale
    data = plan_data(config, stages, scale, shape)
    device = default_device()
    precision = resolve_precision(config.precision, device, config, stages)  # cached or guessed
    rates = stage_rates(config, stages, device, precision, timed_steps)
    out_stages = []
    for stage, d, rate in zip(stages, data, rates, strict=True):
        out_stages.append({
            "name": stage.name, "size": stage.size, "input_size": d.input_size,
            "rows": stage.samples, "epochs": stage.epochs, "mode": d.mode,
            "cache_bytes": d.cache_bytes, "new_cache_bytes": d.new_bytes,
            "train_samples_per_s": round(rate, 1),
            "epoch_seconds": round(stage.samples / rate, 1) if rate else None,
        })  # fmt: skip
    _, free = room_for_caches()
    return {
        "experiment": config.name, "profile": config.profile, "dataset": where,
        "dataset_rows": rows, "train_rows": train_rows, "cache": config.data.cache,
        "cache_budget_gb": config.data.cache_budget_gb, "cache_root": str(cache_root()),
        "disk_free_bytes": free, "device": str(device), "precision": precision,
        "stages": out_stages, "refused": refused,
    }  # fmt: skip


def plan_text(plan: dict) -> str:
    """``plan_report`` as a table for the console."""
    from fgdepth.data.disk import human

    lines = [
        f"{plan['experiment']} at the {plan['profile']} profile on {plan['dataset']} "
        f"({plan['dataset_rows']:,} rows, {plan['train_rows']:,} for training); "
        f"data.cache: {plan['cache']}; {human(plan['disk_free_bytes'])} free under "
        f"{plan['cache_root']}; timed on {plan['device']} in {plan['precision']}",
        f"{'stage':<10}{'size':>6}{'inputs':>8}{'rows':>10}{'epochs':>7}  {'mode':<7}"
        f"{'cache':>10}{'to write':>10}{'samples/s':>11}{'per epoch':>11}",
    ]
    for s in plan["stages"]:
        per_epoch = f"{s['epoch_seconds'] / 60:.1f} min" if s["epoch_seconds"] else "-"
        lines.append(
            f"{s['name']:<10}{s['size']:>6}{s['input_size']:>8}{s['rows']:>10,}{s['epochs']:>7}"
            f"  {s['mode']:<7}{human(s['cache_bytes']):>10}{human(s['new_cache_bytes']):>10}"
            f"{s['train_samples_per_s']:>11}{per_epoch:>11}"
        )
    if plan.get("refused"):
        lines.append(f"training would refuse this: {plan['refused']} (planned on those rows)")
    return "\n".join(lines)
