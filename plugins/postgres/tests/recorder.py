"""A site plugin for the cluster tests: appends each change it is given to a file, with
the process that delivered it."""

from __future__ import annotations

import os

from lanthorn import Server, hookimpl
from lanthorn.index import Change

config_sections = ("Recorder",)


@hookimpl
def on_change(server: Server, change: Change) -> None:
    with open(server.config.section("Recorder")["Path"], "a") as log:
        log.write(f"{os.getpid()} {change.seq} {change.change_type.name} {change.public_id}\n")
