"""Who may do what over DICOM: Orthanc's ``DicomModalities`` and access options.

A peer is a known modality when its calling AET (and, with ``DicomCheckModalityHost``,
its address) matches an entry of ``DicomModalities``. A known modality may use the
services its ``Allow*`` flags permit; any peer may use those whose
``DicomAlwaysAllow*`` option is true. AETs compare ignoring case unless
``StrictAetComparison`` is true, as in Orthanc.
"""

from __future__ import annotations

import socket
import weakref
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..config import Config, ConfigError
from ..errors import InexistentItem

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from ..server import Server

#: The services that the access options name (``DicomAlwaysAllow<name>``, ``Allow<name>``).
SERVICES = ("Echo", "Store", "Find", "FindWorklist", "Get", "Move")
#: Orthanc's other per-modality permissions: storage commitment requests (NAction) and
#: reports (EventReport), and Transcoding of instances sent to it.
OTHER_PERMISSIONS = ("EventReport", "NAction", "Transcoding")


@dataclass(frozen=True)
class Modality:
    """One entry of ``DicomModalities``."""

    name: str
    aet: str
    host: str
    port: int
    manufacturer: str = "Generic"
    local_aet: str = ""
    timeout: int = 0
    permissions: dict[str, bool] = field(default_factory=dict)
    use_tls: bool = False  # request associations over DICOM TLS

    def allows(self, service: str) -> bool:
        return self.permissions.get(service, True)

    def configuration(self) -> dict[str, Any]:
        """Orthanc's ``/modalities/{id}/configuration`` object."""
        allow = {f"Allow{name}": self.allows(name)
                 for name in sorted((*SERVICES, *OTHER_PERMISSIONS))}
        return {"AET": self.aet, **allow, "Host": self.host, "LocalAet": self.local_aet,
                "Manufacturer": self.manufacturer, "Port": self.port,
                "Timeout": self.timeout, "UseDicomTls": self.use_tls}


def all_modalities(server: Server) -> dict[str, Modality]:
    """``DicomModalities`` with the modalities defined or deleted over REST, by name."""
    return server.index.overlaid("modality", parse_modalities(server.config), parse_modality)


def modality_named(server: Server, name: str) -> Modality:
    """One modality; InexistentItem when there is none of that name."""
    found = all_modalities(server).get(name)
    if found is None:
        raise InexistentItem(f"No modality with symbolic name: {name}")
    return found


def parse_modality(name: str, entry: Any) -> Modality:
    """One entry of ``DicomModalities`` (array or object form); ConfigError naming it."""
    return _modality(name, entry)


def parse_modalities(config: Config) -> dict[str, Modality]:
    """Every entry of ``DicomModalities``; a malformed one is a ConfigError naming it."""
    return {name: _modality(name, entry)
            for name, entry in config["DicomModalities"].items()}


def _modality(name: str, entry: Any) -> Modality:
    where = f'"DicomModalities.{name}"'
    if isinstance(entry, list) and len(entry) in (3, 4):
        return Modality(name, _aet(entry[0], where), _host(entry[1], where),
                        _port(entry[2], where), *([str(entry[3])] if len(entry) == 4 else []))
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be [AET, host, port] or an object")
    flags = {*SERVICES, *OTHER_PERMISSIONS}
    permissions = {key[5:]: value for key, value in entry.items()
                   if key.startswith("Allow") and key[5:] in flags}
    if not all(isinstance(value, bool) for value in permissions.values()):
        raise ConfigError(f"{where}: the Allow* flags must be booleans")
    use_tls = entry.get("UseDicomTls", False)
    if not isinstance(use_tls, bool):
        raise ConfigError(f"{where}: UseDicomTls must be a boolean")
    return Modality(name, _aet(entry.get("AET"), where), _host(entry.get("Host"), where),
                    _port(entry.get("Port"), where),
                    str(entry.get("Manufacturer", "Generic")), str(entry.get("LocalAet", "")),
                    _integer(entry.get("Timeout", 0), f"{where}: the timeout", 0, 86400),
                    permissions, use_tls)


#: What a request body may change of a modality for one operation (Orthanc's names).
OVERRIDES = {"CalledAet": "aet", "Host": "host", "Port": "port", "LocalAet": "local_aet"}


def with_overrides(modality: Modality, options: dict[str, Any]) -> Modality:
    """``modality`` for one request: the body's ``CalledAet``, ``Host`` and ``Port`` in
    place of the configured ones, and its ``LocalAet`` unless the configuration sets one,
    as Orthanc; ConfigError when one is malformed."""
    parse = {"aet": _aet, "host": _host, "port": _port, "local_aet": _aet}
    changes = {attribute: parse[attribute](options[key], f'"{key}"')
               for key, attribute in OVERRIDES.items() if options.get(key) not in (None, "")}
    if modality.local_aet:
        changes.pop("local_aet", None)
    return replace(modality, **changes)


def _aet(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value.strip()) <= 16:
        raise ConfigError(f"{where}: the AET must be a string of 1 to 16 characters")
    return value.strip()


def _host(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: the host must be a non-empty string")
    return value


def _port(value: Any, where: str) -> int:
    return _integer(value, f"{where}: the port", 1, 65535)


def _integer(value: Any, what: str, low: int, high: int) -> int:
    """A number, possibly written as a string (Orthanc accepts ``"4242"``)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = low - 1
    if isinstance(value, bool) or not low <= number <= high:
        raise ConfigError(f"{what} must be a number from {low} to {high}")
    return number


@dataclass(frozen=True)
class Refusal:
    """Why an association is rejected: A-ASSOCIATE-RJ (result, source, reason) and words."""

    diagnostic: int
    reason: str
    result: int = 0x01  # rejected-permanent
    source: int = 0x01  # DICOM UL service-user


CALLING_AET_NOT_RECOGNIZED = 0x03
CALLED_AET_NOT_RECOGNIZED = 0x07


class AccessRules:
    """The access options, read once (the configuration does not change while serving);
    the modalities are read at each use, as they may be changed over REST."""

    def __init__(self, server: Server) -> None:
        config = server.config
        self.server = server
        self.our_aet = config["DicomAet"]
        self.strict = bool(config["StrictAetComparison"])
        self.check_called = bool(config["DicomCheckCalledAet"])
        self.check_host = bool(config["DicomCheckModalityHost"])
        self.always = frozenset(s for s in SERVICES if config[f"DicomAlwaysAllow{s}"])
        self._store_decisions: weakref.WeakKeyDictionary[Association, str | None] = \
            weakref.WeakKeyDictionary()

    def same_aet(self, first: str, second: str) -> bool:
        first, second = first.strip(), second.strip()
        return first == second if self.strict else first.upper() == second.upper()

    def caller(self, aet: str, address: str) -> Modality | None:
        """The modality a peer is, by its calling AET (and address, if checked)."""
        return next((m for m in all_modalities(self.server).values()
                     if self.same_aet(m.aet, aet)
                     and (not self.check_host or _is_address_of(address, m.host))), None)

    def destination(self, aet: str) -> Modality | None:
        """The modality a C-MOVE sends to, by AET."""
        return next((m for m in all_modalities(self.server).values()
                     if self.same_aet(m.aet, aet)), None)

    def refusal(self, service: str, aet: str, address: str) -> str | None:
        """Why a peer may not use ``service``, or None when it may."""
        if service in self.always:
            return None
        modality = self.caller(aet, address)
        if modality is None:
            host = " and DicomCheckModalityHost is true" if self.check_host else ""
            return (f'AET "{aet}" at {address} is not in DicomModalities{host}, and '
                    f"DicomAlwaysAllow{service} is false")
        if not modality.allows(service):
            return f'modality "{modality.name}" has Allow{service} false'
        return None

    def store_refusal(self, association: Association, aet: str, address: str) -> str | None:
        """``refusal("Store", ...)`` decided at the association's first C-STORE and kept
        for its others: reading the modalities for each instance was a tenth of the
        listener's CPU. A change of the modalities applies from the next association,
        as for the other services."""
        try:
            return self._store_decisions[association]
        except KeyError:
            decision = self._store_decisions[association] = self.refusal("Store", aet, address)
            return decision

    def association_refusal(self, calling: str, called: str, address: str) -> Refusal | None:
        """Why an association is rejected outright, or None to negotiate it."""
        if self.check_called and not self.same_aet(called, self.our_aet):
            return Refusal(CALLED_AET_NOT_RECOGNIZED,
                           f'it calls AET "{called}", not "{self.our_aet}" '
                           "(DicomCheckCalledAet is true)")
        modality = self.caller(calling, address)
        if self.always or (modality is not None and any(modality.allows(s) for s in SERVICES)):
            return None
        why = (f'modality "{modality.name}" allows no service' if modality else
               f'AET "{calling}" at {address} is not in DicomModalities and no '
               "DicomAlwaysAllow* option is true")
        return Refusal(CALLING_AET_NOT_RECOGNIZED, f"no service is allowed: {why}")


def _is_address_of(address: str, host: str) -> bool:
    if address == host:
        return True
    try:
        return address in socket.gethostbyname_ex(host)[2]
    except OSError:  # an unresolvable host is no match
        return False
