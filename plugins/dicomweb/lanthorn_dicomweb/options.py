"""The ``DicomWeb`` configuration section (Orthanc's option names where they apply)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lanthorn import Server
from lanthorn.config import ConfigError

log = logging.getLogger(__name__)

SECTION = "DicomWeb"
#: Option name -> (type, default).
OPTIONS: dict[str, tuple[type, Any]] = {
    "Enable": (bool, True),
    "Root": (str, "/dicom-web/"),
    "EnableWado": (bool, True),
    "WadoRoot": (str, "/wado"),
    "Host": (str, ""),
    "Ssl": (bool, False),
    "QidoCaseSensitive": (bool, True),
    "EnableMetadataCache": (bool, True),
    "Servers": (dict, {}),
}


@dataclass(frozen=True)
class Options:
    enable: bool
    root: str  # without the trailing slash: "/dicom-web"
    enable_wado: bool
    wado_root: str
    host: str  # "" : the Host the client used
    ssl: bool
    qido_case_sensitive: bool
    metadata_cache: bool  # keep rendered DICOM JSON in the index
    servers: dict[str, Any]


def read_options(server: Server) -> Options:
    """The section with its defaults; a wrong type is a ConfigError naming the option."""
    section = server.config.section(SECTION)
    for key in sorted(set(section) - set(OPTIONS)):
        log.warning('unknown option "%s.%s" is ignored (known: %s)', SECTION, key,
                    ", ".join(OPTIONS))
    values = {}
    for key, (kind, default) in OPTIONS.items():
        value = section.get(key, default)
        if not isinstance(value, kind):
            raise ConfigError(f'"{SECTION}.{key}" must be a {kind.__name__}, got {value!r}')
        values[key] = value
    for key in ("Root", "WadoRoot"):
        if not values[key].startswith("/"):
            raise ConfigError(f'"{SECTION}.{key}" must start with "/", got {values[key]!r}')
    return Options(values["Enable"], values["Root"].rstrip("/"), values["EnableWado"],
                   values["WadoRoot"].rstrip("/") or "/wado", values["Host"], values["Ssl"],
                   values["QidoCaseSensitive"], values["EnableMetadataCache"],
                   values["Servers"])
