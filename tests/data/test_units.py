"""Depth in metres: the three encodings at known values, round trips, and dataset.yaml."""

import math

import numpy as np
import pytest
import torch

from fgdepth.data.units import DepthEncoding, parse, read_declaration
from fgdepth.errors import DataError

NEAR, FAR = 2.0, 50.0


@pytest.mark.parametrize(
    "encoding, middle",
    [
        ("linear", 26.0),  # 50 - 0.5 * 48
        ("inverse", 1 / (1 / 50 + 0.5 * (1 / 2 - 1 / 50))),  # 3.846...: the mean of 1/z
        ("log", 10.0),  # sqrt(2 * 50): the mean of log z
    ],
)
def test_known_values_at_near_far_and_the_middle(encoding, middle):
    enc = DepthEncoding(encoding, NEAR, FAR)
    assert enc.to_metres(1.0) == pytest.approx(NEAR)  # brighter = nearer: d = 1 at near
    assert enc.to_metres(0.0) == pytest.approx(FAR)
    assert enc.to_metres(0.5) == pytest.approx(middle)
    for d in (0.0, 0.5, 1.0):  # and back
        assert enc.to_unit(enc.to_metres(d)) == pytest.approx(d, abs=1e-12)
    for z in (NEAR, middle, FAR):
        assert enc.to_metres(enc.to_unit(z)) == pytest.approx(z)


def test_the_inverse_encoding_is_linear_in_one_over_z():
    enc = DepthEncoding("inverse", NEAR, FAR)
    d = np.array([0.1, 0.4, 0.7])
    np.testing.assert_allclose(1 / enc.to_metres(d), 1 / FAR + d * (1 / NEAR - 1 / FAR))


@pytest.mark.parametrize("encoding", ["linear", "inverse", "log"])
def test_arrays_and_tensors_keep_their_type_and_nearer_is_brighter(encoding):
    enc = DepthEncoding(encoding, NEAR, FAR)
    d = np.linspace(0, 1, 11)
    z = enc.to_metres(d)
    assert isinstance(z, np.ndarray) and z.shape == (11,)
    assert (np.diff(z) < 0).all()  # a larger stored value is nearer
    t = enc.to_metres(torch.tensor(d, dtype=torch.float64))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), z)
    assert math.isnan(float(enc.to_metres(torch.tensor(float("nan")))))  # no foreground


def test_the_built_in_generator_stores_what_it_declares():
    from fgdepth.data.synth import DEPTH_ENCODING, dataset_yaml, depth_to_unit

    z = np.array([1.0, 2.5, 6.3, 17.0, 40.0])
    np.testing.assert_allclose(DEPTH_ENCODING.to_metres(depth_to_unit(z)), z)
    assert read_declaration(dataset_yaml()) == DepthEncoding("log", 1.0, 40.0)
    assert str(DEPTH_ENCODING) == "log 1-40 m"


def test_parse_reads_a_declaration_and_writes_it_back():
    enc = parse({"encoding": "inverse", "near": 0.5, "far": 80})
    assert enc == DepthEncoding("inverse", 0.5, 80.0) and str(enc) == "inverse 0.5-80 m"
    assert parse(enc.to_dict()) == enc
    assert parse({"encoding": "linear", "near": 0, "far": 10}).near == 0.0  # 0 m: linear only
    assert read_declaration(b"depth: {encoding: log, near: 1, far: 40}\n") == parse(
        {"encoding": "log", "near": 1, "far": 40}
    )
    assert read_declaration(b"") is None and read_declaration(b"{}\n") is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("depth: [1, 40]", "depth: expected a mapping of encoding, near, far"),
        ("depth: {encoding: cubic, near: 1, far: 40}", "'cubic' is not one of linear, inverse"),
        ("depth: {encoding: log, near: 1}", "depth.far: expected a distance in metres, got None"),
        ("depth: {encoding: log, near: one, far: 40}", "depth.near: expected a distance"),
        ("depth: {encoding: log, near: true, far: 40}", "depth.near: expected a distance"),
        ("depth: {encoding: log, near: 40, far: 1}", "log needs 0 < near < far (got near 40"),
        ("depth: {encoding: log, near: 0, far: 40}", "log needs 0 < near < far"),
        ("depth: {encoding: linear, near: -1, far: 40}", "linear needs 0 <= near < far"),
        ("depth: {encoding: log, near: 1, far: .inf}", "depth.far: expected a distance"),
        ("depth: {encoding: log, near: 1, far: 40, unit: mm}", "depth: unknown key 'unit'"),
        ("dept: {encoding: log, near: 1, far: 40}", "unknown key 'dept'; valid: depth"),
        ("- depth", "expected a mapping with the key depth"),
        ("depth: {encoding: log", "not readable YAML"),
    ],
)
def test_a_malformed_declaration_is_one_line(text, message):
    with pytest.raises(DataError) as caught:
        read_declaration(text.encode())
    assert message in str(caught.value) and "\n" not in str(caught.value)
