"""The ``"PostgreSQL"`` configuration section, checked once and turned into a URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from lanthorn.config import ConfigError

SECTION = "PostgreSQL"
DRIVER = "postgresql+psycopg"

#: Keys of the section and their defaults (the names of Orthanc's PostgreSQL plugin).
DEFAULTS: dict[str, Any] = {
    "EnableIndex": False,
    "EnableStorage": False,
    "Host": "localhost",
    "Port": 5432,
    "Database": "lanthorn",
    "Username": "lanthorn",
    "Password": "",
    "ConnectionUri": "",
    "MaximumConnections": 16,
}
_CONNECTION_KEYS = ("Host", "Port", "Database", "Username", "Password")


@dataclass(frozen=True)
class Settings:
    url: URL
    enable_index: bool = False
    enable_storage: bool = False
    maximum_connections: int = DEFAULTS["MaximumConnections"]

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> Settings:
        """Validate the section: an unknown key or a wrong type is a ConfigError, not a
        silent fallback to a database the admin did not mean."""
        values = dict(DEFAULTS)
        by_fold = {_fold(k): k for k in DEFAULTS}
        for key, value in section.items():
            known = by_fold.get(_fold(key))
            if known is None:
                raise ConfigError(f'unknown key "{SECTION}.{key}"; known keys: '
                                  + ", ".join(DEFAULTS))
            expected = type(DEFAULTS[known])
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ConfigError(f'"{SECTION}.{known}" must be a {expected.__name__}, '
                                  f"got {value!r}")
            values[known] = value
        if values["ConnectionUri"] and any(_fold(k) in map(_fold, _CONNECTION_KEYS)
                                           for k in section):
            raise ConfigError(f'"{SECTION}": give either ConnectionUri or Host/Port/Database/'
                              "Username/Password, not both")
        return cls(_url(values), values["EnableIndex"], values["EnableStorage"],
                   values["MaximumConnections"])


def _url(values: dict[str, Any]) -> URL:
    if not values["ConnectionUri"]:
        return URL.create(DRIVER, values["Username"], values["Password"] or None,
                          values["Host"], values["Port"], values["Database"])
    try:
        url = make_url(values["ConnectionUri"])
    except ArgumentError as exc:
        raise ConfigError(f'"{SECTION}.ConnectionUri" is not a database URL: {exc}') from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError(f'"{SECTION}.ConnectionUri" must be a postgresql:// URL')
    return url.set(drivername=DRIVER)


def _fold(name: str) -> str:
    return name.replace("_", "").casefold()
