"""Cache or stream per stage: the budget, the disk, and refusals before any decoding."""

import errno
import os

import pytest

from fgdepth.data import DataError, build_cache, cache_root, open_dataset
from fgdepth.data.cache import cache_bytes, input_size_for, model_cache_keys
from fgdepth.data.disk import DiskFull
from fgdepth.data.modes import DataShape, plan_stage_data

SHAPE = DataShape(rows=1000, backgrounds=50, source_side=192)
GB = 10**9


def test_cache_bytes_count_every_array():
    # 64 px whole: fg_bg 3 + mask 1 + depth 2 bytes per pixel per row; bg 3 per background
    assert cache_bytes([64], 10, 2) == 10 * 64 * 64 * 6 + 2 * 64 * 64 * 3 + 4 * 10  # + bg_index


def test_inputs_are_never_read_above_the_source_resolution():
    assert input_size_for(96, 2, 192) == 192
    assert input_size_for(192, 2, 192) == 192  # not 384: upsampling is done on the device
    assert model_cache_keys(192, 2, 192) == [192]
    plan = plan_stage_data([96, 192], 2, SHAPE, "never", room=GB)
    assert [p.input_size for p in plan] == [192, 192] and [p.clamped for p in plan] == [0, 1]


def test_auto_caches_the_stages_that_fit_the_budget_and_streams_the_rest():
    sizes = [64, 96, 192]
    need = [cache_bytes(model_cache_keys(s, 2, 192), 1000, 50) for s in sizes]
    plan = plan_stage_data(sizes, 2, SHAPE, "auto", budget_bytes=need[0] + need[1], room=GB)
    assert [p.mode for p in plan] == ["cache", "cache", "stream"]
    assert [p.cache_bytes for p in plan] == [need[0], need[1], 0]
    # the disk caps the budget
    plan = plan_stage_data(sizes, 2, SHAPE, "auto", budget_bytes=GB, room=need[0])
    assert [p.mode for p in plan] == ["cache", "stream", "stream"]
    assert {p.mode for p in plan_stage_data(sizes, 2, SHAPE, "never", room=GB)} == {"stream"}


def test_keys_cached_already_cost_nothing():
    keys = frozenset(model_cache_keys(64, 1, 192))
    keys = frozenset((k, "all") for k in keys)
    shape = DataShape(1000, 50, 192, keys)
    (plan,) = plan_stage_data([64], 1, shape, "auto", budget_bytes=0, room=0)
    assert plan.mode == "cache" and plan.new_bytes == 0 and plan.cache_bytes > 0


def test_always_over_budget_is_refused_in_one_line():
    with pytest.raises(DataError, match=r"data.cache: always needs .* budget") as exc:
        plan_stage_data([64, 96], 2, SHAPE, "always", budget_bytes=1000, room=GB)
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="is free there"):
        plan_stage_data([64, 96], 2, SHAPE, "always", room=1000, free=1000)


def test_a_full_disk_stops_the_build_in_one_line_and_leaves_no_half_cache(
    synth_dir, tmp_path, monkeypatch
):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(DiskFull, match="not enough disk space") as exc:
        build_cache(open_dataset(synth_dir), 32, root=tmp_path / "c", quiet=True)
    assert "\n" not in str(exc.value) and "needed" in str(exc.value)
    assert [p.name for p in (tmp_path / "c").iterdir() if not p.name.endswith(".lock")] == []


def test_too_little_free_disk_is_found_before_decoding(synth_dir, tmp_path, monkeypatch):
    import fgdepth.data.disk as disk

    monkeypatch.setattr(disk, "free_bytes", lambda path: 1000)
    with pytest.raises(DiskFull, match=r"needed, 1.0 kB free"):
        build_cache(open_dataset(synth_dir), 32, root=tmp_path / "c", quiet=True)
    assert not any(p.is_dir() for p in (tmp_path / "c").iterdir())


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FGDEPTH_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
