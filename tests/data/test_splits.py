import numpy as np
import pandas as pd
import pytest

from fgdepth.config import DataConfig
from fgdepth.data import DataError, open_dataset
from fgdepth.data.splits import assign_splits


def _frame(n_bg=30, per_bg=20):
    bgs = [f"bg/{b}.jpg" for b in range(n_bg) for _ in range(per_bg)]
    return pd.DataFrame(
        {"fg_bg": [f"f{i}" for i in range(len(bgs))], "bg": bgs, "mask": "m", "depth": "d"}
    )


def test_split_by_background_has_no_overlap_and_follows_ratios():
    frame = _frame()
    split = assign_splits(frame, DataConfig(test=0.3, val=0.1))
    owners = frame.assign(split=split).groupby("bg")["split"].nunique()
    assert (owners == 1).all()
    share = pd.Series(split).value_counts(normalize=True)
    assert share["test"] == pytest.approx(0.3, abs=0.04)
    assert share["val"] == pytest.approx(0.1, abs=0.04)


def test_split_is_deterministic_and_seeded():
    frame = _frame()
    a = assign_splits(frame, DataConfig(split_seed=1))
    assert (a == assign_splits(frame, DataConfig(split_seed=1))).all()
    assert (a != assign_splits(frame, DataConfig(split_seed=2))).any()


def test_bg_id_column_groups_backgrounds():
    frame = _frame(n_bg=10).assign(bg_id=lambda f: f["bg"].str[:4])  # all share 'bg/1'..'bg/9'
    split = assign_splits(frame, DataConfig())
    assert frame.assign(split=split).groupby("bg_id")["split"].nunique().max() == 1


def test_split_column_is_used_and_val_carved_from_train_when_absent():
    frame = _frame(n_bg=20).assign(split=lambda f: np.where(f.index < 100, "test", "train"))
    split = assign_splits(frame, DataConfig(val=0.1))
    assert (split[:100] == "test").all()
    assert set(split[100:]) == {"train", "val"}


def test_unknown_split_value_is_an_error():
    frame = _frame(n_bg=2).assign(split="holdout")
    with pytest.raises(DataError, match="holdout"):
        assign_splits(frame, DataConfig())


def test_synth_dataset_splits_by_background(synth_dir):
    ds = open_dataset(synth_dir)
    tests = set(ds.rows["bg"][ds.split == "test"])
    trains = set(ds.rows["bg"][ds.split == "train"])
    assert tests and trains and not tests & trains


def test_fractions_that_leave_no_train_part_are_an_error():
    with pytest.raises(DataError, match="leave no train part"):
        assign_splits(_frame(), DataConfig(test=0.6, val=0.4))
