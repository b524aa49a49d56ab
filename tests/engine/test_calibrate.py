"""The contact readout's line, fitted on the validation rows after a stage."""

import numpy as np
import torch
from torch import nn

from fgdepth.engine import calibrate
from fgdepth.engine.calibrate import fit_readout
from fgdepth.metrics import masked_median
from tests.engine.test_evaluate import Arrays

CPU = torch.device("cpu")


class Reader(nn.Module):
    """Reads each object's level off its true depth through a known line: read = (depth +
    0.0625) / 1.25, so the line that gives the depth back is (-0.0625, 1.25)."""

    contact_fit = True

    def __init__(self):
        super().__init__()
        self.register_buffer("contact_line", torch.tensor([0.0, 1.0]))
        self.seen = []

    def contact_levels(self, fg_bg, bg):
        changed = (fg_bg - bg).abs().amax(1, keepdim=True) > 0
        self.seen.append(len(fg_bg))
        depth = masked_median(fg_bg[:, :1], changed)  # the data's depth is fg_bg's red channel
        return torch.logit((depth + 0.0625) / 1.25)


def test_the_line_is_fitted_on_the_rows_given_and_kept_in_the_model():
    data, model = Arrays(rows=60), Reader().train()
    line = fit_readout(model, data, np.arange(10, 50), CPU, batch_size=16)
    # levels from float32 depths through sigmoid and back: the line within 1e-5
    assert torch.allclose(line, torch.tensor([-0.0625, 1.25]), atol=1e-5)
    assert torch.equal(model.contact_line, line)
    assert model.seen == [16, 16, 8] and model.training  # the 40 rows given; its mode restored


def test_at_most_max_rows_are_read(monkeypatch):
    monkeypatch.setattr(calibrate, "MAX_ROWS", 32)
    data, model = Arrays(rows=60), Reader()
    fit_readout(model, data, np.arange(60), CPU, batch_size=16)
    assert sum(model.seen) == 32


def test_a_model_without_a_line_is_left_as_it_was():
    model = nn.Linear(1, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert fit_readout(model, Arrays(), np.arange(6), CPU, batch_size=4) is None
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
