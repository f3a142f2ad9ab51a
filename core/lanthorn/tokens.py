"""API tokens: bearer tokens that let scripts act for a registered user.

A token is 32 random bytes, so a single SHA-256 of it is a safe thing to store (argon2's
deliberate slowness protects passwords people choose, not random secrets) and checking
one costs a hash and an index lookup. A token carries its user's roles at the time of use
(a user removed from ``RegisteredUsers`` takes its tokens along), or one narrower role.
Nobody gets a token granting more than they hold themselves.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .auth import ROLES, permits
from .errors import BadRequest, Forbidden, InexistentItem
from .index.tokens import TokenRecord
from .types import Principal

if TYPE_CHECKING:
    from .server import Server

#: Marks a string as a Lanthorn token (for people and secret scanners alike).
PREFIX = "lanthorn_"
DESCRIPTION_LENGTH = 256


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def granted(roles: frozenset[str]) -> frozenset[str]:
    """The permissions a set of roles grants."""
    return frozenset().union(*(ROLES[role] for role in roles if role in ROLES))


def create(server: Server, caller: Principal, user: str, role: str | None = None,
           expires_in: float | None = None, description: str = "") -> tuple[TokenRecord, str]:
    """A new token for ``user`` (the caller, unless an admin), and its secret, shown once."""
    _may_manage(caller, user)
    owner = server.users.users.get(user)
    if owner is None:
        raise BadRequest(f'"{user}" is not in RegisteredUsers: tokens act for registered users')
    if role is not None and role not in ROLES:
        raise BadRequest(f'unknown role "{role}" (one of {", ".join(ROLES)})')
    wanted = granted(frozenset({role})) if role is not None else granted(owner.roles)
    if not wanted <= granted(owner.roles):
        raise BadRequest(f'role "{role}" grants more than "{user}" holds')
    if not wanted <= granted(caller.roles):
        raise Forbidden("a token may not grant more than its creator holds")
    if expires_in is not None and expires_in <= 0:
        raise BadRequest("the expiry must be a positive number of seconds")
    if len(description) > DESCRIPTION_LENGTH:
        raise BadRequest(f"the description is longer than {DESCRIPTION_LENGTH} characters")
    now = time.time()
    record = TokenRecord(secrets.token_hex(8), user, role, description, now,
                         None if expires_in is None else now + expires_in)
    secret = PREFIX + secrets.token_urlsafe(32)
    server.index.tokens.add(record, digest(secret))
    return record, secret


def listed(server: Server, caller: Principal, user: str | None = None) -> list[TokenRecord]:
    """The caller's tokens; an admin's choice of one user's, or everyone's (``user`` None)."""
    if not permits(caller, "admin"):
        user = caller.name
    return server.index.tokens.list(user)


def revoke(server: Server, caller: Principal, token_id: str) -> None:
    """Forget a token: one's own, or anyone's for an admin (404 for others' tokens too)."""
    owner = None if permits(caller, "admin") else caller.name
    if not server.index.tokens.revoke(token_id, owner):
        raise InexistentItem(f"no API token {token_id}")


def authenticate(server: Server, token: str) -> Principal | None:
    """The principal a presented token stands for, or None (unknown, expired, or its user
    gone or no longer holding the token's role)."""
    record = server.index.tokens.find(digest(token))
    if record is None or (record.expires is not None and record.expires <= time.time()):
        return None
    owner = server.users.users.get(record.user)
    if owner is None:
        return None
    if record.role is None:
        return Principal(owner.name, owner.roles, "token")
    if not ROLES[record.role] <= granted(owner.roles):
        return None
    return Principal(owner.name, frozenset({record.role}), "token")


def describe(record: TokenRecord) -> dict[str, Any]:
    """A token as REST and the CLI show it (never its secret, which is not kept)."""
    return {"ID": record.id, "User": record.user, "Role": record.role,
            "Description": record.description, "Created": _iso(record.created),
            "Expires": None if record.expires is None else _iso(record.expires)}


def _may_manage(caller: Principal, user: str) -> None:
    if user != caller.name and not permits(caller, "admin"):
        raise Forbidden("only an admin manages other users' tokens")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
