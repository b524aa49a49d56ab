import os
import threading

import pytest

from fgdepth.parallel import chunked, run_chunks

# held by the parent while workers start: a worker forked from it would inherit it held
_LOCK = threading.Lock()
_state: dict = {}


def _setup(offset: int) -> None:
    if not _LOCK.acquire(timeout=20):
        raise RuntimeError("worker started with a lock its parent held")
    _LOCK.release()
    _state["offset"] = offset


def _shift(chunk: range) -> list[int]:
    return [i + _state["offset"] for i in chunk]


def _die(chunk: range) -> list[int]:
    if chunk.start == 4:
        os._exit(3)
    return list(chunk)


@pytest.mark.parametrize("workers", [1, 2])
def test_every_chunk_comes_back_once(workers):
    parts = run_chunks(_shift, chunked(10, 3), workers, quiet=True, setup=_setup, setup_args=(100,))
    assert sorted(i for part in parts for i in part) == list(range(100, 110))


def test_workers_do_not_inherit_a_lock_held_by_another_thread():
    held, release = threading.Event(), threading.Event()

    def hold():
        with _LOCK:
            held.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        parts = list(run_chunks(_shift, chunked(4, 2), 2, quiet=True, setup=_setup,
                                setup_args=(0,)))  # fmt: skip
    finally:
        release.set()
        thread.join()
    assert sorted(i for part in parts for i in part) == [0, 1, 2, 3]


def test_a_worker_that_dies_raises_instead_of_hanging():
    with pytest.raises(RuntimeError, match="decode: a worker process died"):
        list(run_chunks(_die, chunked(8, 2), 2, desc="decode", quiet=True))
