"""Users, roles and passwords: who may call the REST API, and with which permissions.

``RegisteredUsers`` takes Orthanc's form (``"name": "password"``: an admin with a
plain-text password, kept for compatibility) or ``"name": {"Password": ..., "Roles": [...],
"CertificateCommonNames": [...]}`` (client certificates that log in as this user);
a password starting with ``$argon2`` is an argon2 hash, as ``lanthorn passwd`` prints.
Verifying an argon2 hash costs tens of milliseconds on purpose, so an outcome is
remembered for a short while (keyed by a keyed hash of the credentials, never the
password itself).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import argon2

from .config import ConfigError
from .types import Principal

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

#: Permissions a route may require, from the most common to the most dangerous;
#: ``account`` (managing one's own API tokens) belongs to every role.
PERMISSIONS = ("read", "store", "write", "admin", "account")
#: What each role grants (docs/security.md).
ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset(PERMISSIONS),
    "editor": frozenset({"read", "store", "write", "account"}),
    "uploader": frozenset({"store", "account"}),
    "viewer": frozenset({"read", "account"}),
}
#: Orthanc's users have no roles: each may do everything.
ORTHANC_FORM_ROLES = frozenset({"admin"})
ANONYMOUS = Principal("anonymous", frozenset({"admin"}), "anonymous")
HASH_PREFIX = "$argon2"
#: How long a verified password is remembered, and how many are at most.
CACHE_SECONDS = 60.0
CACHE_ENTRIES = 1024

_hasher = argon2.PasswordHasher()


@dataclass(frozen=True)
class User:
    name: str
    #: An argon2 hash, or (Orthanc's form, discouraged) the password itself; None: this
    #: user logs in by client certificate only.
    secret: str | None
    roles: frozenset[str]
    #: Common names (CN) of the client certificates that identify this user.
    certificate_names: frozenset[str] = frozenset()

    @property
    def hashed(self) -> bool:
        return self.secret is None or self.secret.startswith(HASH_PREFIX)

    def check(self, password: str) -> bool:
        if self.secret is None:
            return False
        if not self.hashed:
            return hmac.compare_digest(self.secret.encode(), password.encode())
        try:
            return _hasher.verify(self.secret, password)
        except argon2.exceptions.VerificationError:
            return False


def hash_password(password: str) -> str:
    """An argon2id hash for ``RegisteredUsers`` (what ``lanthorn passwd`` prints)."""
    return _hasher.hash(password)


def permits(principal: Principal, permission: str) -> bool:
    return any(permission in ROLES.get(role, ()) for role in principal.roles)


def authentication_enabled(config: Config) -> bool:
    """Orthanc's rule: unless set, authentication is on exactly when remote access is."""
    enabled = config["AuthenticationEnabled"]
    return bool(config["RemoteAccessAllowed"] if enabled is None else enabled)


def credentials(header: str, scheme: str) -> str | None:
    """What follows ``scheme`` (compared case-insensitively) in an ``Authorization`` header."""
    found, _, value = header.strip().partition(" ")
    return value.strip() if found.lower() == scheme and value.strip() else None


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` header; None if absent or malformed."""
    encoded = credentials(header, "basic")
    if encoded is None:
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, colon, password = decoded.partition(":")
    return (name, password) if colon else None


class Users:
    """The registered users, and a short memory of passwords already verified."""

    def __init__(self, users: dict[str, User]) -> None:
        self.users = users
        self.by_certificate = {cn: user for user in users.values()
                               for cn in user.certificate_names}
        self._key = os.urandom(32)
        self._verified: dict[bytes, tuple[float, User | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config) -> Users:
        users = {name: _parse_user(name, entry)
                 for name, entry in config["RegisteredUsers"].items()}
        claimed = [cn for user in users.values() for cn in user.certificate_names]
        if len(claimed) != len(set(claimed)):
            raise ConfigError("RegisteredUsers: a certificate common name belongs to two users")
        plain = sorted(user.name for user in users.values() if not user.hashed)
        if plain:
            log.warning("RegisteredUsers holds plain-text passwords (%s): replace them with "
                        "hashes printed by `lanthorn passwd`", ", ".join(plain))
        if authentication_enabled(config) and not users:
            log.warning("authentication is enabled but RegisteredUsers is empty: only "
                        "plugins' authentication can let anyone in")
        return cls(users)

    def verify(self, name: str, password: str) -> User | None:
        """The user these credentials identify, or None.

        Failures are remembered too: a script repeating wrong credentials must not keep
        the server busy hashing (passwords change only with the configuration)."""
        key = hmac.new(self._key, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            remembered = self._verified.get(key)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        user = self.users.get(name)
        verified = user if user is not None and user.check(password) else None
        with self._lock:
            if len(self._verified) >= CACHE_ENTRIES:
                self._verified = {k: v for k, v in self._verified.items() if v[0] > now}
                if len(self._verified) >= CACHE_ENTRIES:
                    self._verified.clear()
            self._verified[key] = (now + CACHE_SECONDS, verified)
        return verified


def _parse_user(name: str, entry: object) -> User:
    where = f'RegisteredUsers "{name}"'
    if isinstance(entry, str):
        return _checked(where, User(name, entry, ORTHANC_FORM_ROLES))
    if not isinstance(entry, dict):
        raise ConfigError(f'{where}: expected a password, or an object with "Password" '
                          'and "Roles"')
    unknown = set(entry) - {"Password", "Roles", "CertificateCommonNames"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys " + ", ".join(sorted(unknown)))
    listed = entry.get("Roles", ["viewer"])
    if not isinstance(listed, list) or not listed \
            or not all(isinstance(role, str) and role in ROLES for role in listed):
        raise ConfigError(f"{where}: Roles must be a non-empty list of " + ", ".join(ROLES))
    names = entry.get("CertificateCommonNames", [])
    if not isinstance(names, list) or not all(isinstance(cn, str) and cn for cn in names):
        raise ConfigError(f"{where}: CertificateCommonNames must be a list of names")
    secret = entry.get("Password")
    if not (isinstance(secret, str) or (secret is None and names)):
        raise ConfigError(f'{where}: "Password" must be a string (it may be left out only '
                          'for a user with CertificateCommonNames)')
    return _checked(where, User(name, secret, frozenset(listed), frozenset(names)))


def _checked(where: str, user: User) -> User:
    if user.secret is not None and user.secret.startswith(HASH_PREFIX):
        try:
            argon2.extract_parameters(user.secret)
        except argon2.exceptions.InvalidHashError:
            raise ConfigError(f"{where}: not a valid argon2 hash") from None
    return user
