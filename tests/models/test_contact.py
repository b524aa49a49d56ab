"""The contact readout: the object's level of depth read just below its lowest pixels."""

import torch

from fgdepth.models import build_model
from fgdepth.models.contact import contact_readout


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
