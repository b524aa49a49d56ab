"""Streaming: the same rows in the same order as the cache, each row once per epoch over the
ranks, from folders and packed shards alike."""

from pathlib import Path

import numpy as np
import pytest

from fgdepth.data import DataError, build_model_cache, open_dataset
from fgdepth.data.pack import pack
from fgdepth.data.stream import StreamData
from fgdepth.engine.distributed import World, shard
from fgdepth.engine.epoch import step_starts


def _epoch_shares(rows, batch, world):
    step = batch * world.size
    starts = step_starts(len(rows), 0, step, world.size)
    return [shard(rows[at : at + step], world) for at in starts]


@pytest.mark.parametrize("scale", [1, 2])
def test_stream_gives_the_cache_rows_in_the_same_order_and_pixels(synth_dir, tmp_path, scale):
    dataset = open_dataset(synth_dir)
    cache = build_model_cache(dataset, 32, scale, root=tmp_path / "c", quiet=True)
    stream = StreamData(dataset, 32, cache.input_size, workers=1)
    rows = np.random.default_rng(0).choice(dataset.indices("train"), 20, replace=False)
    shares = _epoch_shares(rows, 6, World())
    pairs = list(zip(cache.batches(shares), stream.batches(shares), strict=True))
    assert len(pairs) == len(shares)
    for cached, streamed in pairs:
        assert cached["index"].tolist() == streamed["index"].tolist()
        for key in ("fg_bg", "bg", "mask", "depth"):
            assert cached[key].dtype == streamed[key].dtype
            diff = (cached[key].int() - streamed[key].int()).abs().max().item()
            assert diff <= 1, key  # within one grey level (the same decoding, in fact)
    assert stream.bad == []


@pytest.fixture(scope="module")
def packed(synth_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "pk"
    pack(open_dataset(synth_dir), out, rows_per_shard=16)
    return out


@pytest.mark.parametrize("source", ["folder", "shards"])
def test_two_ranks_stream_every_train_row_once_per_epoch(synth_dir, packed, source):
    dataset = open_dataset(synth_dir if source == "folder" else packed)
    train = dataset.indices("train")
    rows = np.random.default_rng(1).permutation(train)
    seen = []
    for rank in range(2):
        stream = StreamData(dataset, 32, 32, workers=0)
        for batch in stream.batches(_epoch_shares(rows, 4, World(rank, 2))):
            seen += batch["index"].tolist()
    assert sorted(seen) == sorted(train.tolist())  # every row, none twice


def test_packed_shards_hold_the_dataset_and_read_as_webdataset(synth_dir, packed):
    import webdataset as wds

    folder, shards = open_dataset(synth_dir), open_dataset(packed)
    assert len(shards) == len(folder) and (shards.split == folder.split).all()
    assert shards.depth_encoding == folder.depth_encoding  # dataset.yaml travels with them
    assert folder.depth_encoding is not None
    for i in (0, 17, 39):
        a, b = folder.sample(i, 32), shards.sample(i, 32)
        assert (a.fg_bg == b.fg_bg).all() and (a.depth == b.depth).all()
    urls = sorted(str(p) for p in (packed / "shards").glob("*.tar"))
    keys = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)]
    assert sum(k.startswith("r") for k in keys) == len(folder)  # plus one per background


def test_a_row_that_fails_to_decode_stops_or_is_skipped(copy_of, synth_dir):
    root = copy_of(synth_dir)
    broken = root / "fg_bg" / "0000" / "0000005.jpg"
    broken.write_bytes(broken.read_bytes()[:100])
    dataset = open_dataset(root)
    with pytest.raises(DataError, match="0000005.jpg"):
        list(StreamData(dataset, 32, 32, workers=0).batches([np.array([4, 5, 6])]))
    stream = StreamData(dataset, 32, 32, workers=0, skip_bad=True)
    (batch,) = stream.batches([np.array([4, 5, 6])])
    assert batch["index"].tolist() == [4, 6]
    assert [p.row for p in stream.bad] == [5] and "0000005.jpg" in str(stream.bad[0])


def test_a_cache_read_by_loader_workers_gives_the_same_batches(synth_dir, tmp_path):
    from fgdepth.data.stream import LoadedCache

    cache = build_model_cache(open_dataset(synth_dir), 32, 2, root=tmp_path / "c", quiet=True)
    loaded = LoadedCache(cache, workers=1, pin_memory=False)
    shares = [np.array([7, 1, 30]), np.array([2, 5])]
    for a, b in zip(cache.batches(shares), loaded.batches(shares), strict=True):
        assert all((a[k] == b[k]).all() for k in ("index", "fg_bg", "bg", "mask", "depth"))
    assert loaded.mode == "cache" and loaded.input_size == 64
