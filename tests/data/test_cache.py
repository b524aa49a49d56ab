import numpy as np
import pytest
import torch

from fgdepth.data import DataError, build_cache, open_dataset
from tests.conftest import write_dataset


def test_cache_matches_direct_decoding_for_folder_and_zip(synth_dir, synth_zip, tmp_path):
    a = build_cache(open_dataset(synth_dir), 32, root=tmp_path / "c", quiet=True)
    b = build_cache(open_dataset(synth_zip), 32, root=tmp_path / "c", workers=2, quiet=True)
    idx = np.array([3, 0, 21])
    ba, bb = a.batch(idx), b.batch(idx)
    for key in ("fg_bg", "bg", "mask", "depth"):
        torch.testing.assert_close(ba[key], bb[key], rtol=0, atol=0)
    s = open_dataset(synth_dir).sample(21, 32)
    row = list(ba["index"]).index(21)
    np.testing.assert_array_equal((ba["fg_bg"][row] * 255).round().byte().permute(1, 2, 0), s.fg_bg)
    np.testing.assert_array_equal(ba["mask"][row, 0].bool().numpy(), s.mask)
    assert ba["depth"][row, 0].numpy() == pytest.approx(s.depth, abs=1 / 65535)
    assert ba["fg_bg"].shape == (3, 3, 32, 32) and ba["mask"].shape == (3, 1, 32, 32)


def test_cache_is_reused_and_invalidated_when_the_dataset_changes(copy_of, tmp_path):
    from tests.conftest import write_dataset as make

    root = make(tmp_path / "ds")
    first = build_cache(open_dataset(root), 16, root=tmp_path / "c", quiet=True)
    again = build_cache(open_dataset(root), 16, root=tmp_path / "c", quiet=True)
    assert first.path == again.path
    (root / "fg0.jpg").write_bytes((root / "fg1.jpg").read_bytes())
    changed = build_cache(open_dataset(root), 16, root=tmp_path / "c", quiet=True)
    assert changed.path != first.path
    other_size = build_cache(open_dataset(root), 24, root=tmp_path / "c", quiet=True)
    assert other_size.path != changed.path


def test_corrupt_image_stops_the_build_unless_skipping(tmp_path):
    root = write_dataset(tmp_path / "ds", rows=4)
    data = (root / "fg2.jpg").read_bytes()
    (root / "fg2.jpg").write_bytes(data[:200])
    with pytest.raises(DataError, match="fg2.jpg: not a readable image"):
        build_cache(open_dataset(root), 16, root=tmp_path / "c", quiet=True)
    cache = build_cache(open_dataset(root), 16, root=tmp_path / "c", skip_bad=True, quiet=True)
    assert [p.row for p in cache.bad] == [2]
    # a later run that does not skip is still told
    with pytest.raises(DataError, match="1 bad row"):
        build_cache(open_dataset(root), 16, root=tmp_path / "c", quiet=True)


def test_large_jpeg_is_decoded_at_reduced_scale_close_to_full_decode(tmp_path):
    from PIL import Image

    from fgdepth.data.format import Source, read_rgb

    y, x = np.mgrid[0:512, 0:512]
    img = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "big.jpg", quality=95)
    src = Source(tmp_path)
    fast = read_rgb(src, "big.jpg", 64).astype(float)
    full = np.asarray(
        Image.open(tmp_path / "big.jpg").convert("RGB").resize((64, 64), Image.BILINEAR)
    )
    assert fast.shape == (64, 64, 3)
    assert np.abs(fast - full).mean() < 6


def test_scaled_input_cache_reads_inputs_larger_and_keeps_the_targets(synth_dir, tmp_path):
    from fgdepth.data import ScaledInputCache, build_model_cache

    dataset = open_dataset(synth_dir)
    plain = build_model_cache(dataset, 16, 1, root=tmp_path / "c", quiet=True)
    scaled = build_model_cache(dataset, 16, 2, root=tmp_path / "c", quiet=True)
    assert not isinstance(plain, ScaledInputCache) and isinstance(scaled, ScaledInputCache)
    assert scaled.size == 16 and len(scaled) == len(plain) and scaled.bad == []
    idx = np.array([5, 1, 30])
    a, b = plain.batch(idx), scaled.batch(idx)
    assert b["fg_bg"].shape == b["bg"].shape == (3, 3, 32, 32)
    for key in ("mask", "depth", "index"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # each part holds only its own arrays, and the inputs are those of a whole cache at 32
    assert scaled.inputs.mask is None and scaled.inputs.depth is None
    assert scaled.targets.fg_bg is None and scaled.targets.bg is None
    whole = build_model_cache(dataset, 32, 1, root=tmp_path / "c", quiet=True).batch(idx)
    for key in ("fg_bg", "bg"):
        torch.testing.assert_close(whole[key], b[key], rtol=0, atol=0)
    s = dataset.sample(30, 32)
    row = list(b["index"]).index(30)
    np.testing.assert_array_equal((b["fg_bg"][row] * 255).round().byte().permute(1, 2, 0), s.fg_bg)


def test_parts_and_whole_caches_in_one_pass_equal_separate_builds(synth_dir, tmp_path):
    from fgdepth.data import build_caches

    dataset = open_dataset(synth_dir)
    keys = [(32, "inputs"), (16, "targets"), 24, (24, "targets")]
    together = build_caches(dataset, keys, root=tmp_path / "a", workers=2, quiet=True)
    assert list(together) == keys
    assert len({c.path for c in together.values()}) == len(keys)  # one folder per key
    idx = np.arange(len(dataset))
    for key, cache in together.items():
        size = key if isinstance(key, int) else key[0]
        whole = build_cache(dataset, size, root=tmp_path / "b", quiet=True).batch(idx)
        got = cache.batch(idx)
        assert (
            set(got)
            == {"index"}
            | {
                "all": {"fg_bg", "bg", "mask", "depth"},
                "inputs": {"fg_bg", "bg"},
                "targets": {"mask", "depth"},
            }[cache.part]
        )
        for name in set(got) - {"index"}:
            torch.testing.assert_close(got[name], whole[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown cache part 'labels'"):
        build_caches(dataset, [(16, "labels")], root=tmp_path / "a", quiet=True)


def test_several_sizes_in_one_pass_equal_one_size_at_a_time(synth_dir, tmp_path):
    """One pass decodes each JPEG once per reduced scale (24 and 32 px share the half-scale
    decode of these 64 px images); every array is the same as from separate builds."""
    from fgdepth.data import build_caches

    dataset = open_dataset(synth_dir)
    together = build_caches(dataset, [32, 16, 24, 64], root=tmp_path / "a", workers=2, quiet=True)
    assert sorted(together) == [16, 24, 32, 64]
    idx = np.arange(len(dataset))
    for size, cache in together.items():
        alone = build_cache(dataset, size, root=tmp_path / "b", quiet=True)
        assert cache.path.name == alone.path.name
        a, b = cache.batch(idx), alone.batch(idx)
        for key in ("fg_bg", "bg", "mask", "depth"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    again = build_caches(dataset, [16, 64], root=tmp_path / "a", quiet=True)
    assert again[16].path == together[16].path  # built once, then read


def test_a_cache_of_some_rows_decodes_the_others_when_asked_and_never_reads_them_as_zeros(
    synth_dir, tmp_path
):
    from fgdepth.data import build_caches

    dataset = open_dataset(synth_dir)
    keys = [(32, "inputs"), (16, "targets")]
    some = np.array([1, 5, 30])
    part = build_caches(dataset, keys, root=tmp_path / "a", workers=2, quiet=True, rows=some)
    for cache in part.values():
        assert np.flatnonzero(cache.decoded).tolist() == [1, 5, 30]
        with pytest.raises(ValueError, match="row 2 was not decoded"):
            cache.raw(np.array([1, 2]))
    whole = build_caches(dataset, keys, root=tmp_path / "b", quiet=True)
    for key in keys:
        a, b = part[key].batch(some), whole[key].batch(some)
        for name in set(a) - {"index"}:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    # a later call that wants more rows fills them into the same folders
    more = build_caches(dataset, keys, root=tmp_path / "a", quiet=True, rows=np.arange(20))
    all_rows = build_caches(dataset, keys, root=tmp_path / "a", quiet=True)
    idx = np.arange(len(dataset))
    for key in keys:
        assert more[key].path == part[key].path == all_rows[key].path
        assert np.flatnonzero(more[key].decoded).tolist() == [*range(20), 30]
        assert all_rows[key].decoded is None  # every row: nothing to mark
        a, b = all_rows[key].batch(idx), whole[key].batch(idx)
        for name in set(a) - {"index"}:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_a_bad_row_found_when_filling_a_cache_is_recorded_and_not_tried_again(tmp_path):
    root = write_dataset(tmp_path / "ds", rows=4)
    (root / "fg2.jpg").write_bytes((root / "fg2.jpg").read_bytes()[:200])
    dataset = open_dataset(root)
    first = build_cache(dataset, 16, root=tmp_path / "c", quiet=True, rows=np.array([0, 1]))
    assert first.bad == [] and first.decoded.tolist() == [True, True, False, False]
    with pytest.raises(DataError, match="fg2.jpg: not a readable image"):
        build_cache(dataset, 16, root=tmp_path / "c", quiet=True)
    filled = build_cache(dataset, 16, root=tmp_path / "c", skip_bad=True, quiet=True)
    assert [p.row for p in filled.bad] == [2] and filled.decoded is None
    with pytest.raises(DataError, match="1 bad row"):
        build_cache(dataset, 16, root=tmp_path / "c", quiet=True)
