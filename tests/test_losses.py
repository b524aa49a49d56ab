import math

import pytest
import torch

from fgdepth.losses import (
    LOSSES,
    HeadLoss,
    bce_loss,
    dice_loss,
    fg_l1_loss,
    l1_loss,
    lovasz_loss,
    ssim_loss,
)


def test_bce_known_value():
    logits = torch.zeros(1, 1, 4, 4)
    assert bce_loss(logits, torch.ones_like(logits)).item() == pytest.approx(math.log(2))


def test_dice_known_values():
    target = torch.zeros(1, 1, 8, 8)
    target[..., :4, :] = 1
    perfect = torch.where(target > 0, 50.0, -50.0)
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    half = torch.zeros_like(target)  # sigmoid 0.5 everywhere: 2*16/(32+32) with eps 1
    assert dice_loss(half, target).item() == pytest.approx(1 - (2 * 16 + 1) / (32 + 32 + 1))


def test_dice_has_a_gradient_on_one_channel_outputs():
    logits = torch.zeros(2, 1, 8, 8, requires_grad=True)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    dice_loss(logits, target).backward()
    assert logits.grad.abs().sum() > 0


def test_ssim_is_zero_for_identical_images_and_positive_otherwise():
    target = torch.rand(2, 1, 32, 32) * 0.8 + 0.1
    logits = torch.log(target / (1 - target))
    assert ssim_loss(logits, target).item() == pytest.approx(0.0, abs=1e-4)
    assert ssim_loss(torch.zeros_like(logits), target).item() > 0.5


def test_l1_known_value():
    assert l1_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)).item() == pytest.approx(0.5)


def test_lovasz_equals_one_minus_iou_where_each_pixel_is_either_right_or_undecided():
    # the Lovasz extension agrees with the IoU loss on sets: pixels with hinge error 1
    # (logit 0) count as wrong, pixels with error 0 (logit +-1 on the right side) as right
    gen = torch.Generator().manual_seed(0)
    truth = (torch.rand(3, 1, 12, 12, generator=gen) > 0.6).float()
    wrong = torch.rand(3, 1, 12, 12, generator=gen) > 0.8
    logits = torch.where(wrong, 0.0, 2 * truth - 1)
    predicted = torch.where(wrong, 1 - truth, truth)
    inter = (predicted * truth).flatten(1).sum(1)
    union = ((predicted + truth) > 0).float().flatten(1).sum(1)
    assert lovasz_loss(logits, truth).item() == pytest.approx((1 - inter / union).mean().item())
    assert lovasz_loss(3 * (2 * truth - 1), truth).item() == 0.0  # right beyond the margin


def test_lovasz_weighs_a_pixel_by_what_it_costs_the_iou():
    # one wrong pixel costs a small foreground's IoU more than a large one's
    small, large = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    small[..., 7:9, 7:9] = 1
    large[..., 2:14, 2:14] = 1
    grads = []
    for truth in (small, large):
        logits = (3 * (2 * truth - 1)).clone()
        logits[..., 8, 8] = -0.5  # one foreground pixel on the wrong side
        logits.requires_grad_(True)
        lovasz_loss(logits, truth).backward()
        grads.append(-logits.grad[..., 8, 8].item())
    assert grads[0] > 5 * grads[1] > 0


def test_head_loss_is_a_weighted_sum():
    logits, target = torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16)
    combined = HeadLoss({"bce": 2.0, "l1": 0.5})(logits, target)
    assert combined.item() == pytest.approx(2 * math.log(2) + 0.25)


def test_fg_l1_weighs_each_object_the_same_whatever_its_size():
    target = torch.full((2, 1, 8, 8), 0.5)
    fg = torch.zeros(2, 1, 8, 8)
    fg[0, :, :4, :] = 1  # a large object: 32 pixels
    fg[1, :, 0, 0] = 1  # a one-pixel object
    logits = torch.zeros(2, 1, 8, 8)  # sigmoid 0.5: right everywhere ...
    logits[0, :, :4, :] = math.log(0.7 / 0.3)  # ... but 0.2 off on the large object
    logits[1, :, 0, 0] = math.log(0.9 / 0.1)  # and 0.4 off on the small one
    # per image, the mean error inside the mask, then the mean of the two: (0.2 + 0.4) / 2
    assert fg_l1_loss(logits, target, fg).item() == pytest.approx(0.3, abs=1e-6)
    # the whole-image L1 sees mostly the large object: (32 * 0.2 + 0.4) / 128
    assert l1_loss(logits, target).item() == pytest.approx((32 * 0.2 + 0.4) / 128, abs=1e-6)


def test_fg_l1_skips_images_without_a_foreground():
    target, logits = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)  # 0.5 off everywhere
    fg = torch.zeros(2, 1, 4, 4)
    assert fg_l1_loss(logits, target, fg).item() == 0.0
    fg[1, :, 1, 1] = 1
    assert fg_l1_loss(logits, target, fg).item() == pytest.approx(0.5)


def test_head_loss_passes_the_true_mask_to_the_losses_that_read_it():
    logits, target = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    fg = torch.zeros(1, 1, 4, 4)
    fg[..., 0, 0] = 1
    assert HeadLoss({"l1": 1.0, "fg_l1": 2.0})(logits, target, fg=fg).item() == pytest.approx(
        0.5 + 2 * 0.5
    )
    with pytest.raises(ValueError, match="needs the true mask"):
        HeadLoss({"fg_l1": 1.0})(logits, target)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(KeyError, match="valid: bce, dice, fg_l1, l1, lovasz, ssim"):
        HeadLoss({"focal": 1.0})
    assert LOSSES.names() == ["bce", "dice", "fg_l1", "l1", "lovasz", "ssim"]
