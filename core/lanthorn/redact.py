"""``DeidentifyLogs``: no value that could identify a patient in the application log.

Every log line that would print such a value (a name, an ID, a UID, a tag's value)
passes it through :func:`phi`, so the rule lives in one place. The setting belongs to
the process, as logging does: the last Server built sets it.
"""

from __future__ import annotations

HIDDEN = "<hidden>"
_hide = True


def configure(deidentify: bool) -> None:
    global _hide
    _hide = deidentify


def phi(value: object) -> object:
    """``value`` as a log argument: hidden when ``DeidentifyLogs`` is true."""
    return HIDDEN if _hide else value
