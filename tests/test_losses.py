import math

import pytest
import torch

from fgdepth.losses import LOSSES, HeadLoss, bce_loss, dice_loss, l1_loss, ssim_loss, ssim_window


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


def test_ssim_window_fits_the_image():
    assert ssim_window(64) == 11 and ssim_window(8) == 7 and ssim_window(10) == 9
    with pytest.raises(ValueError):
        ssim_window(2)


def test_l1_known_value():
    assert l1_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)).item() == pytest.approx(0.5)


def test_head_loss_is_a_weighted_sum():
    logits, target = torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16)
    combined = HeadLoss({"bce": 2.0, "l1": 0.5})(logits, target)
    assert combined.item() == pytest.approx(2 * math.log(2) + 0.25)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(KeyError, match="valid: bce, dice, l1, ssim"):
        HeadLoss({"focal": 1.0})
    assert LOSSES.names() == ["bce", "dice", "l1", "ssim"]
