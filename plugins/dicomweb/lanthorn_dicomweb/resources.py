"""Finding the resources a DICOMweb path names, and the URLs that point back to them.

DICOMweb names resources by their UIDs, not by Lanthorn's IDs; the query engine finds
them (several patients may share a Study Instance UID: all of them are answered).
"""

from __future__ import annotations

from starlette.requests import Request

from lanthorn import Level, Server, UnknownResource
from lanthorn.query import build_query

from .options import Options

#: The UID keywords of the path parameters, by level.
UID_KEYWORDS = {Level.STUDY: "StudyInstanceUID", Level.SERIES: "SeriesInstanceUID",
                Level.INSTANCE: "SOPInstanceUID"}
PATH_PARAMETERS = {Level.STUDY: "study", Level.SERIES: "series", Level.INSTANCE: "instance"}


def path_uids(request: Request) -> dict[str, str]:
    """``{"StudyInstanceUID": ..., ...}`` from the path parameters present."""
    return {UID_KEYWORDS[level]: request.path_params[name]
            for level, name in PATH_PARAMETERS.items() if name in request.path_params}


def path_level(request: Request) -> Level:
    """The deepest level the path names (a study, a series or an instance)."""
    return max(level for level, name in PATH_PARAMETERS.items() if name in request.path_params)


def find(server: Server, level: Level, uids: dict[str, str]) -> list[int]:
    """The resources at ``level`` with these UIDs; a 404 that names them if none."""
    query = build_query(level, uids, main_tags=server.main_tags, case_sensitive_pn=True)
    found = server.index.find(query)
    if not found:
        named = ", ".join(f"{key} {value}" for key, value in uids.items())
        raise UnknownResource(f"no {level.title.lower()} with {named}")
    return found


def instances(server: Server, level: Level, uids: dict[str, str]) -> list[int]:
    """The instances of the study, series or instance that the UIDs name."""
    return [i for resource in find(server, level, uids)
            for i in server.index.descendants(resource, Level.INSTANCE)]


def base_url(request: Request, options: Options) -> str:
    """The URL of the DICOMweb root as clients reach it (``Host`` and ``Ssl`` override)."""
    if options.host:
        return f"{'https' if options.ssl else 'http'}://{options.host}{options.root}"
    return f"{request.url.scheme}://{request.url.netloc}{options.root}"


def retrieve_url(base: str, study: str, series: str = "", instance: str = "") -> str:
    url = f"{base}/studies/{study}"
    if series:
        url += f"/series/{series}"
    if instance:
        url += f"/instances/{instance}"
    return url
