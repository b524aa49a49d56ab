"""``fgdepth.engine.plan``: the test rows a run pictures and tables."""

import numpy as np
import pytest

from fgdepth.config import load_config
from fgdepth.engine.plan import picture_rows, plan_run


def _rows(dataset, *sets) -> list[int]:
    return plan_run(load_config("default", "smoke", list(sets)), dataset, 2).picture_rows.tolist()


@pytest.mark.parametrize(
    "sets",
    [["seed=7"], ["seed=123", "optimizer.lr=0.01"], ["eval.max_samples=2"], ["eval.images=3"]],
)
def test_every_run_on_the_same_data_and_split_pictures_the_same_test_rows(train_dataset, sets):
    assert _rows(train_dataset, *sets) == _rows(train_dataset)


def test_the_picture_rows_are_test_rows_drawn_with_a_fixed_seed(train_dataset):
    test = train_dataset.indices("test")
    rows = _rows(train_dataset)
    assert len(rows) == 3 and set(rows) <= set(test.tolist()) and rows == sorted(rows)
    assert picture_rows(test, 3).tolist() == rows
    assert picture_rows(test, 100).tolist() == sorted(test.tolist())  # no more than the split
    assert len(picture_rows(np.arange(1000), 6)) == 6
    # spread, not the split's first rows: a fixed seed, not a slice
    assert picture_rows(np.arange(1000), 6).tolist() != list(range(6))
