"""Data-parallel training on 2 CPU ranks (Gloo), spawned like torchrun's workers."""

import importlib
import os
import socket
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fgdepth.config import load_config
from fgdepth.data import build_cache, open_dataset
from fgdepth.engine import Callback, DivergenceError, fit
from fgdepth.engine.distributed import World, current_world, shard
from fgdepth.engine.evaluate import evaluate
from fgdepth.engine.fit import Interrupted

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, job, args, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = job(rank, *args)
    except BaseException as exc:  # reported to the test, which asserts on it
        trace = traceback.format_exc()
        result = {"raised": type(exc).__name__, "message": str(exc), "trace": trace}
    finally:
        dist.destroy_process_group()
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


def run_ranks(job, args, tmp_path, world_size=2) -> list:
    """``job(rank, *args)`` on ``world_size`` Gloo ranks; each rank's return value (or what
    it raised)."""
    mp.start_processes(
        _worker, (world_size, free_port(), job, args, str(tmp_path)), world_size,
        join=True, start_method="spawn",
    )  # fmt: skip
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


class States(Callback):
    def __init__(self):
        self.states = []

    def on_checkpoint(self, state):
        self.states.append(state)


def _weights_digest(model) -> list[float]:
    return [float(p.double().sum()) for p in model.state_dict().values() if p.is_floating_point()]


def _train_job(rank, data, sets):
    config = load_config("staged_transfer", "smoke", sets)
    states = States()
    result = fit(config, open_dataset(data), [states])
    return {
        "world": current_world().size,
        "metrics": result.metrics,
        "steps": [e.step for s in result.stages for e in s.epochs],
        "digest": _weights_digest(result.model),
        "states": len(states.states),
        "images": sum(len(s.images) for s in result.stages),
    }


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["always", "never"], ids=["cache", "stream"])
def test_two_ranks_train_frozen_stages_to_the_same_weights(train_dataset, tmp_path, mode):
    """staged_transfer freezes a group in two of its stages: no unused-parameter errors, the
    ranks end with identical weights and metrics, and only rank 0 runs callbacks; from the
    decode cache and from a stream."""
    sets = [f"data.cache={mode}", "data.workers=0"]
    r0, r1 = run_ranks(_train_job, (str(train_dataset.path), sets), tmp_path)
    assert "raised" not in r0, r0.get("trace")
    assert "raised" not in r1, r1.get("trace")
    assert r0["world"] == r1["world"] == 2
    assert r0["digest"] == r1["digest"]
    assert r0["metrics"] == r1["metrics"]
    assert r0["steps"] == [0, 1, 2]
    assert r0["states"] > 0 and r1["states"] == 0
    assert r0["images"] > 0 and r1["images"] == 0


class _PixelModel(torch.nn.Module):
    """Logits from each pixel alone (elementwise ops, no convolution): its output for a row
    does not depend on the batch it comes in nor on the threads, which a convolution's need
    not (oneDNN picks its blocking by batch size and thread count). So the two ranks' sums
    can be held to float64's precision, whatever the CPU."""

    def forward(self, fg_bg, bg):  # (B, 3, H, W) each
        changed = (fg_bg - bg).abs().amax(1, keepdim=True)  # (B, 1, H, W)
        return 8 * changed - 1, 4 * fg_bg[:, :1] - 2


def _eval_job(rank, data):
    dataset = open_dataset(data)
    cache = build_cache(dataset, 32)
    rows = dataset.indices(None)
    world = current_world()
    return evaluate(_PixelModel(), cache, rows, torch.device("cpu"), 7, "fp32", world=world)


@pytest.mark.slow
def test_metrics_over_two_ranks_equal_the_single_process_metrics(train_dataset, tmp_path):
    r0, r1 = run_ranks(_eval_job, (str(train_dataset.path),), tmp_path)
    cache = build_cache(train_dataset, 32)
    rows = train_dataset.indices(None)
    single = evaluate(_PixelModel(), cache, rows, torch.device("cpu"), 7, "fp32")
    assert r0 == r1
    assert r0.keys() == single.keys()
    for name, value in single.items():
        # the same per-pixel values, summed in float64 in another grouping: ~1e-15 apart
        assert r0[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def _stop_job(rank, data, state_path):
    """Rank 1 alone receives the stop signal, at its second batch."""
    config = load_config("bce_ssim", "smoke", ["scale.min_samples=32", "batch_size=4"])
    calls = []

    def stop():
        calls.append(1)
        return "SIGTERM" if rank == 1 and len(calls) >= 2 else None

    states = States()
    try:
        fit(config, open_dataset(data), [states], stop=stop)
    except Interrupted as exc:
        if states.states:
            torch.save(states.states[-1], state_path)
        return {"raised": "Interrupted", "message": str(exc), "batches": len(calls)}
    return {"batches": len(calls)}


@pytest.mark.slow
def test_a_stop_on_one_rank_stops_all_and_resumes_on_one_rank(train_dataset, tmp_path):
    state_path = tmp_path / "state.pt"
    r0, r1 = run_ranks(_stop_job, (str(train_dataset.path), str(state_path)), tmp_path)
    assert r0.get("raised") == r1.get("raised") == "Interrupted", (r0, r1)
    assert r0["batches"] == r1["batches"] == 2  # both stopped after the same batch
    assert r0["message"].startswith("SIGTERM: stopped at stage 0 epoch 0 row 16")  # rank 1's
    assert r1["message"] == r0["message"]
    state = torch.load(state_path, weights_only=True)
    assert state["world"] == 2 and state["offset"] == 2 * 2 * 4  # 2 steps of 2 ranks x 4 rows
    assert state["stage"] == 0 and state["epoch"] == 0

    # the same run, continued by a single process: the schedule is replayed to the same point
    config = load_config("bce_ssim", "smoke", ["scale.min_samples=32", "batch_size=4"])
    epochs = []

    class Epochs(Callback):
        def on_epoch_end(self, result, model):
            epochs.append((result.stage, result.step, result.train["loss"]))

    result = fit(config, train_dataset, [Epochs()], resume=state)
    assert [(s, step) for s, step, _ in epochs] == [(0, 0), (1, 1), (2, 2)]  # 3 at smoke
    assert all(np.isfinite(loss) for _, _, loss in epochs)
    assert np.isfinite(result.metrics["mask_iou"])


def _nan_job(rank, data):
    """A non-finite loss on rank 1 only."""
    fit_module = importlib.import_module("fgdepth.engine.epoch")  # where the step's loss is
    real = fit_module._loss

    def loss(run, *args):
        value = real(run, *args)
        return value * float("nan") if rank == 1 else value

    fit_module._loss = loss
    try:
        fit(load_config("bce_ssim", "smoke"), open_dataset(data))
    except DivergenceError as exc:
        return {"raised": "DivergenceError", "message": str(exc)}
    return {}


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank(train_dataset, tmp_path):
    r0, r1 = run_ranks(_nan_job, (str(train_dataset.path),), tmp_path)
    assert r0.get("raised") == r1.get("raised") == "DivergenceError", (r0, r1)


def test_shards_split_the_rows_without_overlap():
    rows = np.arange(11)
    parts = [shard(rows, World(rank, 3)) for rank in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == rows.tolist()
    assert [len(p) for p in parts] == [4, 4, 3]
