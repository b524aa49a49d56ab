import pytest
import torch

from fgdepth.models import MODELS, build_model, model_class


def count(params):
    return sum(p.numel() for p in params)


def test_seed_network_has_the_original_parameter_counts():
    model = build_model("seed")
    assert count(model.parameters()) == 8_801_568
    mask_branch = model.group_parameters("trunk") + model.group_parameters("mask")
    assert count(mask_branch) == 152_544


@pytest.mark.parametrize("name", MODELS.names())
def test_models_map_pairs_to_mask_and_depth_logits(name):
    model = build_model(name)
    fg_bg, bg = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mask, depth = model(fg_bg, bg)
    assert mask.shape == depth.shape == (2, 1, 32, 32)
    (mask.mean() + depth.mean()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", MODELS.names())
def test_groups_cover_every_parameter_once(name):
    model = build_model(name)
    ids = [id(p) for g in ("trunk", "mask", "depth") for p in model.group_parameters(g)]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


OPTIONS = [("seed", {}), ("unet", {}), ("unet", {"context": True, "input_scale": 2})]


@pytest.mark.parametrize("name, options", OPTIONS)
def test_a_model_class_declares_what_its_built_model_has(name, options):
    """What a config is checked against, read from the class, is what building gives."""
    cls, model = model_class(name), build_model(name, **options)
    assert set(cls.group_names) == set(model.groups)
    assert cls.size_multiple == model.size_multiple
    assert cls.input_scale_of(**options) == model.input_scale
    assert set(options) <= set(cls.option_defaults())


def test_options_a_model_refuses_are_refused_without_building_it():
    cls = model_class("unet")
    cls.check_options(input_scale=2, depth_stride=2)
    with pytest.raises(ValueError, match="depth_stride must be 1 or 2"):
        cls.check_options(depth_stride=3)
    with pytest.raises(ValueError, match="input_scale must be 1 or more"):
        cls.check_options(input_scale=0)


def test_default_model_is_much_smaller_than_the_seed():
    assert count(build_model("unet").parameters()) < count(build_model("seed").parameters()) / 5


def test_unknown_model_lists_valid_names():
    with pytest.raises(KeyError, match="valid: seed, unet"):
        build_model("resnet")


def test_unknown_group_lists_valid_names():
    with pytest.raises(KeyError, match="valid: .*depth.*mask"):
        build_model("unet").group_modules("decoder_head")


@pytest.mark.parametrize("context", [False, True])
def test_unet_context_reaches_beyond_the_receptive_field(context):
    """With ``context`` a change in a far corner moves the depth at the other corner; without
    it, that corner lies outside the convolutions' reach (256 px, eval mode)."""
    torch.manual_seed(0)
    model = build_model("unet", context=context).eval()
    fg_bg, bg = torch.rand(1, 3, 256, 256), torch.rand(1, 3, 256, 256)
    changed = fg_bg.clone()
    changed[..., 200:, 200:] = 1.0 - changed[..., 200:, 200:]
    with torch.no_grad():
        _, before = model(fg_bg, bg)
        _, after = model(changed, bg)
    moved = (after - before)[..., :16, :16].abs().max().item()
    assert (moved > 0) == context
    groups = [p for g in ("trunk", "mask", "depth") for p in model.group_parameters(g)]
    assert len(groups) == len(list(model.parameters()))


@pytest.mark.parametrize("rows", [False, True])
def test_unet_rows_tell_a_pixel_its_height(rows):
    """On an image that is the same everywhere, two pixels far from every border (beyond the
    convolutions' reach of the zero padding) get the same depth unless the model is given
    each pixel's height. Without it the two values come from the same sums, which a kernel
    that tiles the image differently may round differently: float32 roundoff, far below 1e-5;
    with it they differ by the channel's effect (7e-3 at this seed)."""
    torch.manual_seed(0)
    model = build_model("unet", width=8, rows=rows).eval()
    fg_bg, bg = torch.full((1, 3, 768, 64), 0.3), torch.full((1, 3, 768, 64), 0.5)
    with torch.no_grad():
        _, depth = model(fg_bg, bg)
    gap = (depth[0, 0, 300, 32] - depth[0, 0, 460, 32]).abs().item()
    assert gap > 1e-3 if rows else gap < 1e-5


def test_unet_with_input_scale_predicts_at_a_fraction_of_its_inputs():
    model = build_model("unet", context=True, input_scale=2)
    assert model.input_scale == 2 and build_model("unet").input_scale == 1
    mask, depth = model(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert mask.shape == depth.shape == (2, 1, 32, 32)
    (mask.mean() + depth.mean()).backward()
    groups = [p for g in ("trunk", "mask", "depth") for p in model.group_parameters(g)]
    assert len(groups) == len(set(map(id, groups))) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="input_scale"):
        build_model("unet", input_scale=0)


def test_input_scale_sees_where_an_outline_runs_within_an_output_pixel():
    """Two inputs that average to the same output-size image but differ within its pixels
    give different outputs: the sub-pixels reach the heads (eval mode)."""
    torch.manual_seed(0)
    model = build_model("unet", input_scale=2).eval()
    bg = torch.zeros(1, 3, 32, 32)
    left, right = bg.clone(), bg.clone()
    left[..., 0::2] = 1.0  # the left half of every output pixel covered
    right[..., 1::2] = 1.0  # the right half
    with torch.no_grad():
        a, b = model(left, bg)[0], model(right, bg)[0]
    assert torch.nn.functional.avg_pool2d(left, 2).equal(torch.nn.functional.avg_pool2d(right, 2))
    assert (a - b).abs().max() > 1e-4


def test_unet_depth_stride_2_predicts_depth_at_half_size_and_upsamples_it():
    model = build_model("unet", context=True, input_scale=2, depth_stride=2)
    seen = {}
    model.depth_head.register_forward_hook(lambda m, args, out: seen.update(shape=out.shape))
    mask, depth = model(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert mask.shape == depth.shape == (2, 1, 32, 32)
    assert seen["shape"] == (2, 1, 16, 16)  # the head ran at half the output size
    (mask.mean() + depth.mean()).backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="depth_stride"):
        build_model("unet", depth_stride=4)


def test_unet_decoder_convs_1_keeps_one_convolution_per_decoder_stage():
    two, one = (build_model("unet", width=8, decoder_convs=n) for n in (2, 1))
    convs = [
        sum(isinstance(m, torch.nn.Conv2d) for m in model.decoder.modules()) for model in (two, one)
    ]
    assert convs == [6, 3]
    x = torch.rand(2, 3, 32, 32)
    assert [t.shape for t in one(x, x)] == [(2, 1, 32, 32), (2, 1, 32, 32)]
    with pytest.raises(ValueError, match="decoder_convs must be 1 or 2, got 3"):
        model_class("unet").check_options(decoder_convs=3)


def test_unet_test_flip_averages_the_pair_and_its_mirror_in_eval_mode_only():
    torch.manual_seed(0)
    model = build_model("unet", width=8, context=True, input_scale=2, depth_stride=2)
    flipping = build_model("unet", width=8, context=True, input_scale=2, depth_stride=2,
                           test_flip=True)  # fmt: skip
    flipping.load_state_dict(model.state_dict())
    fg, bg = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    model.train(), flipping.train()
    for a, b in zip(model(fg, bg), flipping(fg, bg), strict=True):
        assert torch.equal(a, b)  # training: one pass, as without it
    model.eval(), flipping.eval()
    with torch.no_grad():
        plain, mirror = model(fg, bg), model(fg.flip(-1), bg.flip(-1))
        both = flipping(fg, bg)
        mirrored = flipping(fg.flip(-1), bg.flip(-1))
    assert model_class("unet").eval_passes_of(test_flip=True) == 2
    assert model_class("unet").eval_passes_of() == model_class("seed").eval_passes_of() == 1
    for p, m, b, mb in zip(plain, mirror, both, mirrored, strict=True):
        assert torch.allclose(b, (p + m.flip(-1)) / 2, atol=1e-6)
        assert not torch.allclose(b, p, atol=1e-4)  # the mirror's view changed it
        assert torch.allclose(mb.flip(-1), b, atol=1e-5)  # a mirrored pair: the mirrored answer
