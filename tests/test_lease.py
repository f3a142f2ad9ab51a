"""Leases of the index (events, jobs, imports): renewed only when a third of their time
has passed, so a loop woken by every change does not write to the index each time."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event

from lanthorn.builtin.sqlite import sqlite_engine
from lanthorn.index import SqlIndex, upgrade
from lanthorn.lease import Lease


@pytest.fixture
def index(tmp_path: Path) -> SqlIndex:
    engine = sqlite_engine(tmp_path / "index.sqlite", durable=False)
    upgrade(engine)
    return SqlIndex(engine)


def test_a_held_lease_is_renewed_only_when_a_third_of_it_passed(
        index: SqlIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[str] = []
    event.listen(index.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_: "leases" in statement
                 and not statement.lstrip().upper().startswith("SELECT")
                 and writes.append(statement))
    clock = [1000.0]
    monkeypatch.setattr("lanthorn.lease.monotonic", lambda: clock[0])
    lease = Lease(index, "events", "here", 15.0)

    assert lease.held() and len(writes) == 1  # taken
    clock[0] += 4.9
    assert lease.held() and len(writes) == 1  # still fresh: no write
    clock[0] += 0.2
    assert lease.held() and len(writes) == 2  # a third passed: renewed
    assert not Lease(index, "events", "there", 15.0).held()


def test_a_released_lease_can_be_taken_by_another_holder(index: SqlIndex) -> None:
    lease = Lease(index, "jobs", "here", 15.0)
    assert lease.held()
    lease.release()
    other = Lease(index, "jobs", "there", 15.0)
    assert other.held()
    assert not lease.held()  # asks again after a release, and finds it taken
