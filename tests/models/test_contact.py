"""The contact readout: the object's level of depth read just below its lowest pixels."""

import torch

from fgdepth.models import build_model
from fgdepth.models.contact import EPS, MIN_ROWS, contact_level, contact_readout, fit_contact


def scene(h=32, w=32):
    """A floor whose depth logit grows one per row (nearer further down), an object standing on
    row 20 (its lowest row 19, columns 10-13, an arm held out to column 16 at row 8) whose own
    logits are off by +5, with a slope of 0.1 per row inside it."""
    rows = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    depth = rows.clone()
    mask = torch.full((h, w), -10.0)
    mask[4:20, 10:14] = 10.0
    mask[8, 14:17] = 10.0
    inside = mask > 0
    depth[inside] = 25.0 + 0.1 * rows[inside]
    return mask.view(1, 1, h, w), depth.view(1, 1, h, w)


def test_the_level_inside_the_mask_is_the_floors_just_below_its_feet():
    mask, depth = scene()
    out = contact_readout(mask, depth, gap=2, feet=2)
    inside = mask > 0
    # read on row 21 under the four feet columns, two rows below the lowest: four 21s; values
    # are small integers plus a shift, exact in float32
    assert out[inside].median() == 21.0
    assert torch.equal(out[~inside], depth[~inside])  # the background is left as it was
    # the object's own shape of depth is kept: one shift for the whole object
    shift = out[inside] - depth[inside]
    assert torch.allclose(shift, shift[0].expand_as(shift))


def test_an_arm_held_out_is_not_read_as_a_foot():
    mask, depth = scene()
    # a floor that differs under the arm's columns only: read there, the level would move
    depth[..., 22:, 14:17] = -50.0
    out = contact_readout(mask, depth, gap=2, feet=2)
    assert out[mask > 0].median() > 20.0


def test_an_image_without_a_mask_or_cut_off_by_the_bottom_edge_is_left_as_it_was():
    mask, depth = scene()
    empty = torch.full_like(mask, -10.0)
    cut = mask.clone()
    cut[..., 20:, 10:14] = 10.0  # the object runs off the bottom edge: no floor below it
    masks, depths = torch.cat([empty, cut]), torch.cat([depth, depth])
    assert torch.equal(contact_readout(masks, depths), depths)


def test_each_image_of_a_batch_is_read_on_its_own():
    mask, depth = scene()
    other = depth.clone()
    other[mask <= 0] += 3.0  # another floor, three logits nearer
    out = contact_readout(torch.cat([mask, mask]), torch.cat([depth, other]))
    lone = contact_readout(mask, other)
    assert torch.equal(out[1:], lone)
    inside = (mask > 0)[0]
    assert torch.isclose(out[1][inside].median() - out[0][inside].median(), torch.tensor(3.0))


def test_unet_contact_reads_at_the_feet_in_eval_mode_only():
    torch.manual_seed(0)
    model = build_model("unet", width=8, context=True)
    reading = build_model("unet", width=8, context=True, contact=True)
    reading.load_state_dict(model.state_dict())
    fg, bg = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    model.train(), reading.train()
    for a, b in zip(model(fg, bg), reading(fg, bg), strict=True):
        assert torch.equal(a, b)
    model.eval(), reading.eval()
    with torch.no_grad():
        (mask, depth), (mask_r, depth_r) = model(fg, bg), reading(fg, bg)
    assert torch.equal(mask, mask_r)
    assert torch.equal(depth_r, contact_readout(mask, depth))
    # an untrained network's mask may be empty: the forward's wiring, on a scene with an object
    reading.logits = lambda *_: scene()
    mask, depth = scene()
    _, depth_r = reading(fg[:1], bg[:1])
    assert torch.equal(depth_r, contact_readout(mask, depth))
    assert not torch.equal(depth_r, depth)


def test_a_fitted_line_sets_the_level_in_depth():
    mask, depth = scene()
    line = torch.tensor([-0.05, 1.2])
    out = contact_readout(mask, depth, gap=2, feet=2, fit=line)
    # read: logit 21 (as above); through the line, in depth: -0.05 + 1.2 * sigmoid(21) = 1.15,
    # held just inside (0, 1) by EPS
    level = torch.sigmoid(out[mask > 0].median())
    assert torch.isclose(level, torch.tensor(1 - EPS), atol=1e-7)
    floor = depth.clone()
    floor -= 21.0  # the floor's logit at the feet: 0, depth 0.5
    out = contact_readout(mask, floor, gap=2, feet=2, fit=line)
    assert torch.isclose(torch.sigmoid(out[mask > 0].median()), torch.tensor(0.55), atol=1e-6)
    assert torch.equal(out[mask <= 0], floor[mask <= 0])


def test_fit_contact_recovers_a_line_from_the_levels_read():
    gen = torch.Generator().manual_seed(0)
    truth = torch.rand(200, generator=gen) * 0.8 + 0.1
    read = (truth + 0.0625) / 1.25  # the network's level: depth = 1.25 * read - 0.0625
    levels = torch.logit(read)
    levels[::10] = torch.nan  # none read (cut off by the frame)
    truth[5::10] = torch.nan  # no object
    a, b = fit_contact(levels, truth)
    # float32 levels through sigmoid and back: the line within 1e-5 of the exact one
    assert abs(a - -0.0625) < 1e-5 and abs(b - 1.25) < 1e-5


def test_fit_contact_reads_the_level_as_it_is_without_enough_objects_or_spread():
    levels = torch.logit(torch.linspace(0.2, 0.8, MIN_ROWS - 1))
    assert torch.equal(fit_contact(levels, levels.sigmoid() * 0.5), torch.tensor([0.0, 1.0]))
    flat = torch.zeros(100)  # every level the same: no slope to fit
    assert torch.equal(fit_contact(flat, torch.rand(100)), torch.tensor([0.0, 1.0]))


def test_fit_contact_holds_the_slope_within_its_bounds():
    x = torch.linspace(0.3, 0.7, 100)
    a, b = fit_contact(torch.logit(x), 0.5 + 5 * (x - 0.5))  # a slope of 5: held at 2
    assert b == 2.0
    assert abs(a - (0.5 - 2.0 * 0.5)) < 1e-6  # the intercept fitted for that slope


def test_unet_contact_fit_reads_through_its_line_and_saves_it():
    torch.manual_seed(0)
    model = build_model("unet", width=8, context=True, contact=True, contact_fit=True).eval()
    assert torch.equal(model.contact_line, torch.tensor([0.0, 1.0]))
    model.contact_line.copy_(torch.tensor([0.1, 0.9]))
    model.logits = lambda *_: scene()
    fg, bg = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        _, depth = model(fg, bg)
    mask, raw = scene()
    assert torch.equal(depth, contact_readout(mask, raw, fit=torch.tensor([0.1, 0.9])))
    assert torch.equal(model.contact_levels(fg, bg), contact_level(mask, raw))
    again = build_model("unet", width=8, context=True, contact=True, contact_fit=True)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.contact_line, torch.tensor([0.1, 0.9]))
    # without the readout there is no line to fit
    assert not hasattr(build_model("unet", width=8, contact_fit=True), "contact_line")
