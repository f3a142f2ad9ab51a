"""Shared thread pools: a worker forked from a process that used a pool gets its own."""

from __future__ import annotations

import os

import pytest

from lanthorn.pools import SharedPool


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_runs_work_on_a_pool_its_parent_used() -> None:
    pool = SharedPool(1, "test-pool")
    assert pool.submit(os.getpid).result(timeout=5) == os.getpid()
    child = os.fork()
    if child == 0:  # the parent's pool thread does not exist here
        try:
            ran = pool.submit(os.getpid).result(timeout=5) == os.getpid()
        except BaseException:
            ran = False
        os._exit(0 if ran else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
