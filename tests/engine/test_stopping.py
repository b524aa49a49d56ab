"""The stop policy's clock: validations within training due at their times, and a pause for
one moves what is left of the training time with it."""

import math
import types

from fgdepth.engine import stopping
from fgdepth.engine.stopping import StopPolicy


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_each_validation_is_due_once_and_a_pause_moves_the_rest(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(stopping, "time", types.SimpleNamespace(monotonic=clock))
    policy = StopPolicy(None, None, math.inf)
    policy.train_for(10.0, {1: 2.0, 2: 4.0, 3: 12.0})  # 12 s lies past the 10 s left
    clock.now += 1.0
    assert policy.after_batch().report == 0
    clock.now += 1.5  # 2.5 s of training
    assert policy.after_batch().report == 1
    assert policy.after_batch().report == 0  # once
    policy.paused(5.0)  # that validation took 5 s
    clock.now += 6.0  # 3.5 s of training
    verdict = policy.after_batch()
    assert not verdict.report and not verdict.deadline
    clock.now += 1.0  # 4.5 s
    assert policy.after_batch().report == 2
    clock.now += 6.0  # 10.5 s: the training time left is spent
    verdict = policy.after_batch()
    assert verdict.deadline and not verdict.report


def test_a_stop_request_is_not_also_a_validation(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(stopping, "time", types.SimpleNamespace(monotonic=clock))
    policy = StopPolicy(lambda: "SIGTERM", None, math.inf)
    policy.train_for(10.0, {1: 1.0})
    clock.now += 2.0
    verdict = policy.after_batch()
    assert verdict.stop == "SIGTERM" and verdict.checkpoint and not verdict.report


def test_shares_passed_within_one_batch_give_one_validation_numbered_by_the_last(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(stopping, "time", types.SimpleNamespace(monotonic=clock))
    policy = StopPolicy(None, None, math.inf)
    policy.train_for(10.0, {1: 1.0, 2: 2.0, 3: 3.0})
    clock.now += 2.5
    assert policy.after_batch().report == 2
    clock.now += 0.1
    assert policy.after_batch().report == 0
    clock.now += 0.5
    assert policy.after_batch().report == 3
