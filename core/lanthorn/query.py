"""The one query engine: DICOM matching rules turned into index constraints.

REST ``/tools/find``, C-FIND and QIDO-RS all build a :class:`Query` here and hand it
to the index, which matches in SQL. This module owns the *semantics* (what a
wildcard, a range or a list means, which comparisons ignore case); the index owns
the SQL.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from enum import Enum

from pydicom.datadict import dictionary_VR

from .errors import BadRequest
from .model import Level, MainTags, parse_tag

MODALITIES_IN_STUDY = 0x00080061
MODALITY = 0x00080060


class Match(Enum):
    EQUAL = "equal"
    WILDCARD = "wildcard"  # ``*`` and ``?``; translated to LIKE/GLOB by the index
    RANGE = "range"  # inclusive, either bound may be empty
    LIST = "list"  # any of the values (each EQUAL)


@dataclass(frozen=True)
class Constraint:
    """One condition on one tag, at the level where the index stores that tag.

    ``level`` above the query's level means "an ancestor matches"; below it means
    "some descendant matches" (ModalitiesInStudy); a tag the index does not keep is
    checked on the stored instance header.
    """

    tag: int
    level: Level
    match: Match
    values: tuple[str, ...]
    case_sensitive: bool = True

    def accepts(self, value: str | None) -> bool:
        """Python-side matching, for tags the index does not keep (checked on headers)."""
        if value is None:
            return False
        candidates = value.split("\\") if "\\" in value else [value]
        return any(self._accepts_one(v) for v in candidates)

    def _accepts_one(self, value: str) -> bool:
        if not self.case_sensitive:
            value = normalize(value)
        if self.match is Match.RANGE:
            low, high = self.values
            return (not low or value >= low) and (not high or value[: len(high)] <= high)
        if self.match is Match.WILDCARD:
            return _wildcard_regex(self.values[0]).fullmatch(value) is not None
        return value in self.values


@dataclass
class Query:
    """A find request in neutral form; ``constraints`` are ANDed."""

    level: Level
    constraints: list[Constraint] = field(default_factory=list)
    labels: tuple[str, ...] = ()
    labels_constraint: str = "All"  # "All", "Any" or "None"
    limit: int = 0
    since: int = 0


def normalize(value: str) -> str:
    """Fold case and accents, as used for case-insensitive matching."""
    if value.isascii():  # most values: NFKD leaves ASCII as it is, nothing combining
        return value.upper()
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def parse_constraint(
    level: Level, key: str, value: str, *, main_tags: MainTags, case_sensitive_pn: bool
) -> Constraint | None:
    """Turn one ``Query`` entry into a constraint, or None for universal matching."""
    try:
        tag = parse_tag(key)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if not isinstance(value, str):
        raise BadRequest(f'the value for "{key}" must be a string')
    value = value.strip()
    if value in ("", "*"):
        return None
    vr = _vr(tag)
    case_sensitive = case_sensitive_pn or vr != "PN"
    if tag == MODALITIES_IN_STUDY:
        # Matched against the Modality of the study's series (a list, never a pattern).
        tag, vr = MODALITY, "CS"
        value = value.replace("*", "")
    owner = main_tags.level_of(tag)
    tag_at = level if owner is None else owner
    if not case_sensitive:
        value = normalize(value)
    if vr in ("DA", "TM", "DT") and "-" in value and "\\" not in value:
        low, _, high = value.partition("-")
        return Constraint(tag, tag_at, Match.RANGE, (low.strip(), high.strip()), case_sensitive)
    if "\\" in value:
        parts = tuple(p for p in value.split("\\") if p)
        if any(_has_wildcard(p) for p in parts):
            raise BadRequest(f'wildcards are not allowed in a list of values ("{key}")')
        return Constraint(tag, tag_at, Match.LIST, parts, case_sensitive)
    if _has_wildcard(value):
        if vr == "UI":
            raise BadRequest(f'wildcards are not allowed in a UID ("{key}")')
        return Constraint(tag, tag_at, Match.WILDCARD, (value,), case_sensitive)
    return Constraint(tag, tag_at, Match.EQUAL, (value,), case_sensitive)


def _vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.S)


def build_query(
    level: Level,
    query: dict[str, str],
    *,
    main_tags: MainTags,
    case_sensitive_pn: bool,
    limit: int = 0,
    since: int = 0,
    labels: tuple[str, ...] = (),
    labels_constraint: str = "All",
) -> Query:
    """Build a :class:`Query` from Orthanc-style ``{"PatientName": "DOE*"}`` pairs."""
    constraints = [
        c
        for key, value in query.items()
        if (c := parse_constraint(
            level, key, value, main_tags=main_tags, case_sensitive_pn=case_sensitive_pn
        ))
    ]
    if labels_constraint not in ("All", "Any", "None"):
        raise BadRequest('LabelsConstraint must be "All", "Any" or "None"')
    return Query(level, constraints, labels, labels_constraint, limit, since)
