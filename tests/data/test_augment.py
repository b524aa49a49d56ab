import torch
import torch.nn.functional as F

from fgdepth.data.augment import AugmentSpec, augment, geometric


def _aligned_batch(n=6, s=32):
    """fg_bg's red channel encodes the mask, green the depth: alignment is checkable."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(n, 1, s, s)
    for i in range(n):
        top, left = torch.randint(0, s - 10, (2,), generator=g).tolist()
        mask[i, 0, top : top + 10, left : left + 6] = 1
    depth = torch.linspace(0.1, 0.9, s).view(1, 1, 1, s).expand(n, 1, s, s).clone()
    fg_bg = torch.cat([mask, depth, torch.zeros_like(mask)], 1)
    return {"fg_bg": fg_bg, "bg": torch.rand(n, 3, s, s, generator=g), "mask": mask, "depth": depth}


def test_geometry_moves_all_four_together():
    spec = AugmentSpec(flip=0.5, zoom=0.3, jitter=0, rgb_shift=0, noise=0, cutout=0)
    batch = _aligned_batch()
    out = augment(batch, spec, torch.Generator().manual_seed(1))
    assert not torch.equal(out["mask"], batch["mask"])  # something moved
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}  # mask stays binary
    torch.testing.assert_close(out["fg_bg"][:, 1:2], out["depth"])
    agree = ((out["fg_bg"][:, :1] > 0.5) == (out["mask"] > 0.5)).float().mean()
    assert agree > 0.99  # only resampled edge pixels may differ


def test_photometric_and_cutout_touch_inputs_only():
    spec = AugmentSpec(flip=0, zoom=0, jitter=0.3, rgb_shift=0.1, noise=0.05, cutout=1.0)
    batch = _aligned_batch()
    out = augment(batch, spec, torch.Generator().manual_seed(2))
    assert torch.equal(out["mask"], batch["mask"]) and torch.equal(out["depth"], batch["depth"])
    assert not torch.equal(out["fg_bg"], batch["fg_bg"])
    assert not torch.equal(out["bg"], batch["bg"])
    # the cutout's grey square is in fg_bg, not in bg
    assert ((out["fg_bg"] == 0.5).all(1)).any()
    assert not ((out["bg"] == 0.5).all(1)).any()


def test_same_generator_seed_same_augmentation():
    spec = AugmentSpec(flip=0.5, zoom=0.15, jitter=0.15, rgb_shift=0.03, noise=0.01, cutout=0.3)
    a = augment(_aligned_batch(), spec, torch.Generator().manual_seed(5))
    b = augment(_aligned_batch(), spec, torch.Generator().manual_seed(5))
    for key in a:
        assert torch.equal(a[key], b[key])


def test_flip_alone_equals_the_resampled_flip():
    """Without zoom the flip skips resampling; the result is the same as through the grid."""
    batch = _aligned_batch()
    spec = AugmentSpec(flip=0.5, zoom=0, jitter=0, rgb_shift=0, noise=0, cutout=0)
    fast = augment(batch, spec, torch.Generator().manual_seed(1))
    flipped = torch.rand(6, generator=torch.Generator().manual_seed(1)) < 0.5
    assert 0 < flipped.sum() < 6
    for key in ("fg_bg", "bg", "mask", "depth"):
        torch.testing.assert_close(fast[key][flipped], batch[key][flipped].flip(-1))
        torch.testing.assert_close(fast[key][~flipped], batch[key][~flipped])
    resampled = geometric(batch, AugmentSpec(flip=1.0, zoom=0), torch.Generator())
    for key in ("fg_bg", "mask", "depth"):
        torch.testing.assert_close(resampled[key], batch[key].flip(-1))


def test_inputs_larger_than_the_truth_move_with_it():
    """Inputs at twice the truth's size (models with input_scale 2) get the same motion."""
    batch = _aligned_batch(s=32)
    big = {k: F.interpolate(batch[k], scale_factor=2, mode="nearest") for k in ("fg_bg", "bg")}
    spec = AugmentSpec(flip=0.5, zoom=0.3, jitter=0, rgb_shift=0, noise=0, cutout=0)
    out = augment({**batch, **big}, spec, torch.Generator().manual_seed(1))
    assert out["fg_bg"].shape[-1] == 64 and out["mask"].shape[-1] == 32
    shrunk = F.avg_pool2d(out["fg_bg"], 2)
    torch.testing.assert_close(shrunk[:, 1:2], out["depth"], atol=0.02, rtol=0)
    agree = ((shrunk[:, :1] > 0.5) == (out["mask"] > 0.5)).float().mean()
    assert agree > 0.98
