import pytest

from fgdepth.config import SynthConfig
from fgdepth.data import open_dataset
from fgdepth.data.synth import generate


@pytest.fixture(scope="session")
def train_dataset(tmp_path_factory):
    """40 built-in samples at 64 px on 5 backgrounds, opened."""
    out = tmp_path_factory.mktemp("engine") / "ds"
    generate(SynthConfig(n=40, size=64, seed=11, backgrounds=5), out, quiet=True)
    return open_dataset(out)
