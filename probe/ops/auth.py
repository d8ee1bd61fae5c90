"""Users, passwords, tokens, the login rate limit and the audit log of the ops service.

* Passwords: ``hashlib.scrypt`` (n=2**14, r=8, p=1, 16-byte salt), stored as
  ``scrypt$n$r$p$salt_b64$hash_b64`` so the cost can be raised later without breaking old hashes.
* Tokens: ``hp_`` + 32 random bytes (URL-safe base64); only their SHA-256 is stored, so a copy of
  the database gives nobody a working token.  API tokens (for scripts) and session tokens (the
  console's cookie) are the same thing with a different ``kind`` and lifetime.
* The login rate limit counts failed attempts in the database, not in memory, so it holds across
  any number of instances behind a load balancer.
* Roles are ordered: viewer < operator < admin.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from functools import cache
from typing import Any, Literal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from probe.ops.db import ApiToken, AuditLog, LoginAttempt, User, lock_key, utcnow

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
TokenKind = Literal["api", "session"]

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
TOKEN_PREFIX = "hp_"
LOGIN_WINDOW = dt.timedelta(seconds=60)
# Attempts are only needed for the last minute; a day is kept to look at an attack afterwards.
LOGIN_KEEP = dt.timedelta(days=1)
LAST_USED_EVERY = dt.timedelta(seconds=60)
MIN_PASSWORD = 8


class AuthError(ValueError):
    """A user or token request that cannot be honoured (duplicate name, bad role, ...)."""


# --------------------------------------------------------------------------- roles


def role_at_least(role: str, minimum: Role) -> bool:
    """True when ``role`` includes everything ``minimum`` may do (unknown roles: nothing)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(minimum)


# --------------------------------------------------------------------------- passwords


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for a malformed hash too (a user
    whose hash was mangled cannot log in, rather than crash the login)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, expected = base64.b64decode(parts[4]), base64.b64decode(parts[5])
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(expected)), expected)


@cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so an unknown name costs as long as a
    known one and the response time does not tell which names exist."""
    return hash_password(secrets.token_urlsafe(16))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int = 32) -> bytes:
    # 128*n*r bytes: 16 MiB today; the room above OpenSSL's 32 MiB default lets a later, costlier
    # n be verified from the stored parameters.
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=256 * 1024 * 1024)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- users


def create_user(session: Session, name: str, password: str, role: str) -> User:
    """A new user (flushed, so it has an id); :class:`AuthError` for a taken name, an unknown
    role or a password shorter than :data:`MIN_PASSWORD`."""
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"the password must have at least {MIN_PASSWORD} characters")
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise AuthError(f"user {name!r} exists already")
    user = User(name=name, password_hash=hash_password(password), role=role, disabled=False,
                created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def set_password(user: User, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"the password must have at least {MIN_PASSWORD} characters")
    user.password_hash = hash_password(password)


# --------------------------------------------------------------------------- tokens


def token_hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_token(session: Session, user: User, name: str, kind: TokenKind = "api",
                 ttl: dt.timedelta | None = None, *, now: dt.datetime | None = None) -> str:
    """A new token for ``user``: its plaintext, shown once and never stored."""
    return issue_token(session, user, name, kind, ttl, now=now)[0]


def issue_token(session: Session, user: User, name: str, kind: TokenKind = "api",
                ttl: dt.timedelta | None = None, *, now: dt.datetime | None = None
                ) -> tuple[str, ApiToken]:
    """:func:`create_token` that also gives the (flushed) row."""
    now = now or utcnow()
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name, token_hash=token_hash(plaintext), kind=kind,
                   created_at=now, expires_at=None if ttl is None else now + ttl,
                   revoked=False)
    session.add(row)
    session.flush()
    return plaintext, row


def find_token(session: Session, plaintext: str, now: dt.datetime
               ) -> tuple[User, ApiToken] | None:
    """The live token for ``plaintext`` and its user: not revoked, not expired, user enabled.
    Marks it used (at most once a minute, so reads do not turn into a write each)."""
    if not plaintext.startswith(TOKEN_PREFIX):
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(plaintext)))
    if row is None or row.revoked or (row.expires_at is not None and row.expires_at <= now):
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
        row.last_used_at = now
    return user, row


def authenticate_token(session: Session, plaintext: str, now: dt.datetime) -> User | None:
    found = find_token(session, plaintext, now)
    return None if found is None else found[0]


# --------------------------------------------------------------------------- login


class LoginRefused(Exception):
    """Too many failed attempts for this name or address in the last minute."""


def login(session: Session, name: str, password: str, remote_addr: str, *,
          limit: int, now: dt.datetime) -> User | None:
    """The user when ``password`` is right, None when not; :class:`LoginRefused` (before the
    password is looked at) after ``limit`` failed attempts for the name or the address in the
    last minute.  Every checked attempt is recorded; refused ones are not, so a client that keeps
    hammering gets ``limit`` password checks a minute, never more."""
    # Serialise attempts on one name / address across instances (PostgreSQL advisory locks; on
    # SQLite the transaction's write lock does it), so parallel guesses cannot all pass the count.
    lock_key(session, f"login-name:{name}")
    lock_key(session, f"login-addr:{remote_addr}")
    if _recent_failures(session, name, remote_addr, now) >= limit:
        raise LoginRefused(name)
    user = session.scalar(select(User).where(User.name == name))
    ok = verify_password(password, user.password_hash if user else _dummy_hash())
    ok = ok and user is not None and not user.disabled
    session.add(LoginAttempt(at=now, name=name[:100], remote_addr=remote_addr[:64], ok=ok))
    session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - LOGIN_KEEP))
    return user if ok else None


def _recent_failures(session: Session, name: str, remote_addr: str, now: dt.datetime) -> int:
    """The larger of the failure counts for the name and for the address."""
    base = select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.at > now - LOGIN_WINDOW, LoginAttempt.ok.is_(False))
    by_name = session.scalar(base.where(LoginAttempt.name == name[:100])) or 0
    by_addr = session.scalar(base.where(LoginAttempt.remote_addr == remote_addr[:64])) or 0
    return max(by_name, by_addr)


def revoke_tokens(session: Session, user_id: int) -> None:
    """Revoke every token of a user (disabled, or password changed)."""
    for row in session.scalars(select(ApiToken).where(ApiToken.user_id == user_id,
                                                      ApiToken.revoked.is_(False))):
        row.revoked = True


# --------------------------------------------------------------------------- audit


def audit(session: Session, user_name: str, action: str, object: str,
          detail: dict[str, Any] | None = None, remote_addr: str | None = None) -> AuditLog:
    """One audit row, in the caller's transaction: it exists exactly when the change does."""
    row = AuditLog(at=utcnow(), user_name=user_name[:100], action=action[:64],
                   object=object[:200], detail=detail or {},
                   remote_addr=None if remote_addr is None else remote_addr[:64])
    session.add(row)
    return row
