"""A lease of the index held by one process, renewed only when it must be.

Background loops (events, jobs) and long imports prove they are alive, or that they
are the one process of the cluster doing a duty, by holding a lease in the index. A
loop woken by every new change (PostgreSQL's NOTIFY wakes it once per ingest) must not
write the lease each time: that is one more write transaction queued behind the
writer lock per instance stored. So the lease is renewed once a third of its time has
passed, and taken as still held in between.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .index import SqlIndex


class Lease:
    def __init__(self, index: SqlIndex, name: str, holder: str, seconds: float) -> None:
        self.index, self.name, self.holder, self.seconds = index, name, holder, seconds
        self._renewed = float("-inf")

    def held(self) -> bool:
        """Whether this process holds the lease, renewing (or taking) it when due."""
        now = monotonic()
        if now - self._renewed < self.seconds / 3:
            return True
        if self.index.acquire_lease(self.name, self.holder, self.seconds):
            self._renewed = now
            return True
        self._renewed = float("-inf")
        return False

    def release(self) -> None:
        self._renewed = float("-inf")
        self.index.release_lease(self.name, self.holder)
