"""precision: auto: measured where the CPU has native bf16, cached, and without a trace in the
run's random stream; fp32 untimed on a CPU without it."""

import importlib
import json

import pytest
import torch

from fgdepth.config import Config, ModelConfig, StageConfig
from fgdepth.engine.precision import (
    choose_precision,
    measurement_key,
    resolve_precision,
    training_precision,
)

CPU = torch.device("cpu")
AVX512_BF16 = {"avx512f", "avx512_bf16"}  # native bf16 without AMX: worth timing
# a tiny unet with a small and a larger stage: the larger one is timed
CONFIG = Config(
    model=ModelConfig("unet", {"width": 4, "head": 4}),
    batch_size=2,
    stages=[StageConfig(size=16), StageConfig(size=32, batch_size=4)],
)


class FakeTimer:
    """A ``Measure`` that returns set rates, records its calls and draws from the global
    generator (as building and training a model does)."""

    def __init__(self, fp32: float, bf16: float):
        self.rates = {"fp32": fp32, "bf16": bf16}
        self.calls = []

    def __call__(self, config, stage, device, precision, steps):
        self.calls.append((stage.size, stage.batch_size, precision))
        torch.rand(8)
        return self.rates[precision]


def choose(measure, config=CONFIG, flags=AVX512_BF16, *, path):
    return training_precision(config, config.stages, CPU, measure, flags=flags, path=path)


@pytest.mark.parametrize(
    ("flags", "expected", "says"),
    [
        ({"avx2", "fma"}, "fp32", "no native bf16"),  # an AVX2-only CPU: bf16 is emulated
        ({"avx2", "avx512f", "avx512bw", "avx512vl"}, "fp32", "no native bf16"),
        (AVX512_BF16, "fp32", "not measured yet"),  # the guess for estimates
        ({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "bf16", "not measured yet"),
    ],
)
def test_the_flags_alone_give_a_guess(flags, expected, says):
    precision, reason = choose_precision("auto", CPU, flags)
    assert precision == expected
    assert says in reason


def test_a_configured_precision_is_kept(tmp_path):
    assert choose_precision("fp32", CPU, {"avx512_bf16"}) == ("fp32", "as configured")
    timer = FakeTimer(fp32=10, bf16=20)
    config = Config(precision="fp32", stages=CONFIG.stages)
    assert choose(timer, config, path=tmp_path / "p.json") == ("fp32", "as configured")
    assert timer.calls == []


def test_bf16_when_measured_faster(tmp_path):
    timer = FakeTimer(fp32=35.0, bf16=41.2)
    precision, reason = choose(timer, path=tmp_path / "p.json")
    assert precision == "bf16"
    assert reason == "auto: measured 41.2 samples/s in bf16 against 35.0 in fp32 at 32 px"
    # the largest stage at its own batch size, bf16 first, each precision twice
    assert timer.calls == [(32, 4, "bf16"), (32, 4, "fp32")] * 2


def test_fp32_when_bf16_is_slower(tmp_path):
    precision, reason = choose(FakeTimer(fp32=35.0, bf16=20.0), path=tmp_path / "p.json")
    assert precision == "fp32"
    assert reason == "auto: measured 35.0 samples/s in fp32 against 20.0 in bf16 at 32 px"


def test_a_tie_keeps_fp32(tmp_path):
    precision, reason = choose(FakeTimer(fp32=100.0, bf16=104.0), path=tmp_path / "p.json")
    assert precision == "fp32"
    assert "104.0 in bf16" in reason and "within 5 %" in reason


def test_without_native_bf16_nothing_is_timed(tmp_path):
    timer = FakeTimer(fp32=10, bf16=20)
    precision, reason = choose(timer, flags={"avx2", "fma"}, path=tmp_path / "p.json")
    assert precision == "fp32" and "emulated" in reason
    assert timer.calls == [] and not (tmp_path / "p.json").exists()


def test_the_measurement_is_cached(tmp_path):
    path = tmp_path / "p.json"
    first = choose(FakeTimer(fp32=35.0, bf16=41.2), path=path)
    timer = FakeTimer(fp32=99, bf16=1)
    again = choose(timer, path=path)
    assert timer.calls == []
    assert again == (first[0], first[1] + " (cached)")
    entry = json.loads(path.read_text())[measurement_key(CONFIG, CONFIG.stages[1], AVX512_BF16)]
    assert entry["of"]["size"] == 32 and entry["of"]["batch"] == 4
    assert entry["of"]["options"] == {"head": 4, "width": 4}


def test_another_model_or_batch_is_measured_again(tmp_path):
    path = tmp_path / "p.json"
    choose(FakeTimer(fp32=35.0, bf16=41.2), path=path)
    wider = Config(model=ModelConfig("unet", {"width": 8, "head": 4}), stages=CONFIG.stages)
    bigger = Config(model=CONFIG.model, stages=[StageConfig(size=32, batch_size=8)])
    for config in (wider, bigger):
        timer = FakeTimer(fp32=35.0, bf16=10.0)
        assert choose(timer, config, path=path)[0] == "fp32"
        assert timer.calls
    assert len(json.loads(path.read_text())) == 3


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"x": 1}', ""])
def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path, text):
    path = tmp_path / "p.json"
    path.write_text(text)
    timer = FakeTimer(fp32=35.0, bf16=41.2)
    assert choose(timer, path=path)[0] == "bf16"
    assert timer.calls
    key = measurement_key(CONFIG, CONFIG.stages[1], AVX512_BF16)
    assert json.loads(path.read_text())[key]["rates"] == {"bf16": 41.2, "fp32": 35.0}
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temporary file left


def test_the_cache_lives_under_the_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FGDEPTH_CACHE", str(tmp_path))
    training_precision(CONFIG, CONFIG.stages, CPU, FakeTimer(1, 2), flags=AVX512_BF16)
    assert (tmp_path / "precision.json").exists()


def test_a_measurement_leaves_the_random_generators_as_they_were(tmp_path):
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    choose(FakeTimer(fp32=35.0, bf16=41.2), path=tmp_path / "p.json")
    assert torch.equal(torch.random.get_rng_state(), before)


def test_a_real_measurement_leaves_the_random_generators_as_they_were(tmp_path):
    from fgdepth.engine.timing import training_rate

    config = Config(model=CONFIG.model, batch_size=2, stages=[StageConfig(size=16)])
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    precision, reason = choose(training_rate, config, path=tmp_path / "p.json")
    assert torch.equal(torch.random.get_rng_state(), before)
    assert precision in ("fp32", "bf16") and reason.startswith("auto: measured")


def test_estimates_take_the_cached_measurement_and_time_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("FGDEPTH_CACHE", str(tmp_path))
    monkeypatch.setattr("fgdepth.engine.precision.cpu_flags", lambda: AVX512_BF16)
    assert resolve_precision("auto", CPU, CONFIG, CONFIG.stages) == "fp32"  # the flags' guess
    training_precision(CONFIG, CONFIG.stages, CPU, FakeTimer(fp32=35.0, bf16=41.2))
    assert resolve_precision("auto", CPU, CONFIG, CONFIG.stages) == "bf16"
    assert resolve_precision("auto", CPU) == "fp32"  # without the run: the flags' guess
    assert resolve_precision("fp32", CPU, CONFIG, CONFIG.stages) == "fp32"


def test_a_gpu_is_not_timed(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    timer = FakeTimer(fp32=35.0, bf16=41.2)
    got = training_precision(CONFIG, CONFIG.stages, torch.device("cuda"), timer, path=tmp_path)
    assert got == ("bf16", "auto: the GPU supports bf16") and timer.calls == []


def test_fit_measures_without_changing_the_run(train_dataset, tmp_path, monkeypatch):
    """A run that measured trains as one that did not: same precision, same weights."""
    from fgdepth.config import load_config
    from fgdepth.engine import fit

    fit_module = importlib.import_module("fgdepth.engine.fit")  # the name is also the function
    monkeypatch.setenv("FGDEPTH_CACHE", str(tmp_path))
    monkeypatch.setattr("fgdepth.engine.precision.cpu_flags", lambda: AVX512_BF16)
    timer = FakeTimer(fp32=35.0, bf16=20.0)  # fp32: bf16 is emulated on most test machines
    monkeypatch.setattr(fit_module, "training_rate", timer)
    # one small stage of a narrow model: the run itself does not matter, only its weights
    tiny = {"model": {"width": 4, "context": False}, "stages": [{"size": 16, "samples": 16}]}
    sets = ["deterministic=true", "data.workers=1", "eval.max_samples=4", "eval.images=1"]
    runs = {}
    for precision in ("auto", "fp32"):
        config = load_config("default", "smoke", [*sets, f"precision={precision}"], tiny)
        runs[precision] = fit(config, train_dataset).model.state_dict()
    assert timer.calls
    weights = zip(runs["auto"].items(), runs["fp32"].items(), strict=True)
    assert all(ka == kb and torch.equal(a, b) for (ka, a), (kb, b) in weights)
