"""Picture grids of samples: greys, the depth colour ramp, tiling, and a dataset's preview."""

import numpy as np
import pytest

from fgdepth.data import open_dataset
from fgdepth.data.preview import (
    colour_depth,
    colour_depth_with_scale,
    depth_ticks,
    grid,
    preview,
    to_rgb,
)
from fgdepth.data.units import DepthEncoding
from tests.conftest import write_dataset

# the ramp's ends and middle: far (0) is dark blue, near (1) is yellow
FAR, MIDDLE, NEAR = (13, 8, 135), (204, 71, 120), (240, 249, 33)


def test_single_channel_images_become_grey_rgb():
    mask = np.array([[True, False]])
    assert to_rgb(mask).tolist() == [[[255, 255, 255], [0, 0, 0]]]
    depth = np.array([[0.0, 0.5, 1.0, 2.0, -1.0]], np.float32)
    grey = to_rgb(depth)
    assert grey.shape == (1, 5, 3) and grey.dtype == np.uint8
    assert grey[0, :, 0].tolist() == [0, 127, 255, 255, 0]  # clipped to [0, 1]
    assert (grey == grey[..., :1]).all()


def test_colour_images_are_kept_or_scaled_to_bytes():
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert to_rgb(rgb) is rgb
    floats = np.array([[[0.0, 0.5, 1.0]]], np.float32)
    assert to_rgb(floats).tolist() == [[[0, 127, 255]]]


def test_the_depth_ramp_has_known_colours_and_clips():
    depth = np.array([[0.0, 0.5, 1.0, -0.3, 1.7, 0.125]], np.float32)
    colours = colour_depth(depth)
    assert colours.shape == (1, 6, 3) and colours.dtype == np.uint8
    assert [tuple(c) for c in colours[0, :5]] == [FAR, MIDDLE, NEAR, FAR, NEAR]
    assert tuple(colours[0, 5]) == (69, 5, 151)  # half way between the first two stops


def test_nearer_is_brighter_along_the_ramp():
    colours = colour_depth(np.linspace(0, 1, 101, dtype=np.float32)[None]).astype(int)
    brightness = colours[0].sum(1)
    assert brightness[-1] > brightness[50] > brightness[0]


def test_a_grid_places_each_tile_in_its_row_and_column():
    tiles = [[np.full((4, 6, 3), 10 * (3 * r + c), np.uint8) for c in range(3)] for r in range(2)]
    canvas = np.asarray(grid(tiles, pad=2))
    assert canvas.shape == (2 + 2 * (4 + 2), 2 + 3 * (6 + 2), 3)  # (H, W, 3)
    for r in range(2):
        for c in range(3):
            y, x = 2 + r * 6, 2 + c * 8
            assert (canvas[y : y + 4, x : x + 6] == 10 * (3 * r + c)).all()
    assert (canvas[:2] == 255).all() and (canvas[:, :2] == 255).all()  # white padding


def test_titles_add_a_band_above_the_tiles():
    tiles = [[np.zeros((4, 6, 3), np.uint8)] * 2]
    plain, titled = grid(tiles), grid(tiles, ["a", "b"])
    assert titled.size == (plain.width, plain.height + 14)
    band = np.asarray(titled)[:14]
    assert (band < 128).any() and (np.asarray(titled)[16:20, 2:8] == 0).all()


def test_rows_with_fewer_tiles_leave_white_space():
    tiles = [[np.zeros((4, 4, 3), np.uint8)] * 2, [np.zeros((4, 4, 3), np.uint8)]]
    canvas = np.asarray(grid(tiles, pad=1))
    assert canvas.shape == (1 + 2 * 5, 1 + 2 * 5, 3)
    assert (canvas[6:10, 6:10] == 255).all()


def test_the_preview_shows_bg_fg_bg_mask_and_coloured_depth_per_row(tmp_path):
    ds = open_dataset(write_dataset(tmp_path / "ds", rows=3))
    picture = preview(ds, [2, 0], size=16)
    assert picture.mode == "RGB" and picture.size == (2 + 4 * 18, 14 + 2 + 2 * 18)
    pixels = np.asarray(picture)
    for r, i in enumerate([2, 0]):
        sample = ds.sample(i, 16)
        y = 14 + 2 + r * 18

        def tile(c, y=y):
            return pixels[y : y + 16, 2 + c * 18 : 2 + c * 18 + 16]

        np.testing.assert_array_equal(tile(0), sample.bg)
        np.testing.assert_array_equal(tile(1), sample.fg_bg)
        np.testing.assert_array_equal(tile(2), to_rgb(sample.mask))
        np.testing.assert_array_equal(tile(3), colour_depth(sample.depth))
    depth = tuple(colour_depth(np.float32([128 / 255]))[0])  # write_dataset's depth everywhere
    assert tuple(pixels[16 + 8, 2 + 3 * 18 + 8]) == depth


@pytest.mark.parametrize("size", [None, 8])
def test_the_preview_keeps_the_samples_size_unless_given_one(tmp_path, size):
    ds = open_dataset(write_dataset(tmp_path / "ds", rows=1))
    width, height = (40, 30) if size is None else (size, size)
    assert preview(ds, [0], size).size == (2 + 4 * (width + 2), 14 + 2 + height + 2)


def test_ticks_run_from_near_to_far_in_metres_or_in_0_1():
    log = DepthEncoding("log", 1.0, 40.0)
    ticks = depth_ticks(log)
    assert [label for _, label in ticks] == ["1 m", "2.5 m", "6.3 m", "16 m", "40 m"]
    assert [round(d, 3) for d, _ in ticks] == [1.0, 0.752, 0.501, 0.248, 0.0]  # where they lie
    assert depth_ticks(None, 3) == [(1.0, "1 near"), (0.5, "0.5"), (0.0, "0 far")]
    # a narrow range takes more digits, so that no two ticks read the same
    labels = [label for _, label in depth_ticks(DepthEncoding("linear", 10.0, 11.0))]
    assert len(set(labels)) == 5 and labels[0] == "10 m" and labels[-1] == "11 m"


@pytest.mark.parametrize("encoding", [None, DepthEncoding("inverse", 0.5, 80.0)])
@pytest.mark.parametrize("height", [24, 64, 480])
def test_the_scale_bar_sits_right_of_the_unchanged_picture(encoding, height):
    depth = np.tile(np.linspace(0, 1, height, dtype=np.float32)[:, None], (1, 40))
    picture = colour_depth_with_scale(depth, encoding)
    assert picture.dtype == np.uint8 and picture.shape[0] == height and picture.shape[1] > 40
    np.testing.assert_array_equal(picture[:, :40], colour_depth(depth))
    # the bar, on white: a column of the ramp from near (top, yellow) to far (bottom, blue)
    right = picture[height // 2, 40:].astype(int)
    x = 40 + int(np.flatnonzero((right != 255).any(axis=1))[0])
    bar = picture[:, x][(picture[:, x] != 255).any(axis=1)].astype(int)
    assert len(bar) >= height / 2
    assert np.abs(bar[0] - NEAR).max() <= 12 and np.abs(bar[-1] - FAR).max() <= 12
