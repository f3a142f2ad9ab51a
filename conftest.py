"""Settings of the whole test run (core and plugin tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: A RAM file system, where the tests' temporary folders go when it has room.
RAM_FOLDER = Path("/dev/shm")
#: The room it must have (a container's /dev/shm is often 64 MB).
RAM_FOLDER_MINIMUM = 2 << 30


def pytest_configure(config: pytest.Config) -> None:
    """Put ``tmp_path`` folders (the test servers' storage areas and indexes) in
    ``RAM_FOLDER`` unless the temporary folder was chosen (``--basetemp``, ``TMPDIR``).

    Every store is flushed (fsync) before it is acknowledged, as ``SyncStorageArea``
    asks by default; on a disk each flush waits for it (about 5 ms a flush on a virtual
    disk), in RAM it returns at once. The code under test is the same.
    """
    chosen = config.option.basetemp or {"TMPDIR", "PYTEST_DEBUG_TEMPROOT"} & set(os.environ)
    if chosen or not os.access(RAM_FOLDER, os.W_OK):
        return
    room = os.statvfs(RAM_FOLDER)
    if room.f_bavail * room.f_frsize >= RAM_FOLDER_MINIMUM:
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(RAM_FOLDER)
