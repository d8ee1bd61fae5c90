"""What every console page shares: who is logged in, the CSRF token, the language, rendering.

The console logs in with the API's own machinery (:mod:`probe.ops.auth`: the rate limit, a
``session`` token, the audit row) and sets the API's cookie, ``hp_session``: one login serves the
pages and the ``fetch()`` calls they make to ``/api/v1``.

CSRF: a form carries ``HMAC(session token, "hp-console-csrf-v1")``.  Only the holder of the
HttpOnly cookie can know it, it needs no server-side state (any instance checks it), and it
changes with every login.  The login form itself has no session yet: it uses a double-submit
cookie.  SameSite=Strict on the session cookie is a second wall, not the only one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy.orm import Session, sessionmaker

from probe.diagnosis.i18n import LANGUAGES
from probe.ops import auth
from probe.ops.config import OpsConfig
from probe.ops.console.texts import translator
from probe.ops.db import transaction, utcnow

SESSION_COOKIE = "hp_session"  # the API's cookie (probe.ops.api.SESSION_COOKIE)
LANG_COOKIE = "hp_lang"
LOGIN_CSRF_COOKIE = "hp_login_csrf"
CSRF_CONTEXT = b"hp-console-csrf-v1"
SECURITY_HEADERS = {
    # Everything is served from here: no CDN, no inline script; media and fetch() stay home.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; media-src 'self'; connect-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class User:
    """The logged-in user of one request."""

    id: int
    name: str
    role: str
    token: str  # the session token's plaintext: the CSRF token is derived from it

    @property
    def may_change(self) -> bool:
        return auth.role_at_least(self.role, "operator")

    @property
    def csrf(self) -> str:
        return csrf_for(self.token)


def csrf_for(token: str) -> str:
    return hmac.new(token.encode(), CSRF_CONTEXT, hashlib.sha256).hexdigest()


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def safe_next(target: str | None) -> str:
    """Where to go after login: a path on this site only (never ``//evil`` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class Web:
    """The templates and the request helpers, bound to one configuration and database."""

    def __init__(self, config: OpsConfig, sessions: sessionmaker[Session]) -> None:
        self.config = config
        self.sessions = sessions
        self.env = Environment(loader=PackageLoader("probe.ops.console", "templates"),
                               autoescape=select_autoescape(["html", "svg"]),
                               undefined=StrictUndefined, trim_blocks=True,
                               lstrip_blocks=True)
        self.env.filters["when"] = when
        self.env.filters["num"] = num
        self.env.globals["qs"] = urlencode

    # -- who ------------------------------------------------------------------------------------
    def user(self, request: Request) -> User | None:
        plaintext = request.cookies.get(SESSION_COOKIE)
        if not plaintext:
            return None
        with transaction(self.sessions) as session:
            found = auth.find_token(session, plaintext, utcnow())
            if found is None:
                return None
            user, _token = found
            return User(user.id, user.name, user.role, plaintext)

    def page_user(self, request: Request) -> User:
        """The user, or a redirect to the login form that comes back here afterwards."""
        user = self.user(request)
        if user is None:
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            # An HTTPException carries the redirect out of any depth of the handler.
            raise HTTPException(303, "login required",
                                headers={"Location": f"/login?next={quote(here, safe='')}"})
        return user

    def operator(self, request: Request, csrf: str | None) -> User:
        """The user of a form POST that changes something: logged in, operator or admin, and
        the form's CSRF token matches their session."""
        user = self.user(request)
        if user is None:
            raise HTTPException(401, "login required")
        if not same(csrf, user.csrf):
            raise HTTPException(403, "the form's CSRF token is missing or wrong")
        if not user.may_change:
            raise HTTPException(403, "needs the operator role")
        return user

    # -- where from -----------------------------------------------------------------------------
    def remote(self, request: Request) -> str:
        # Imported here: the API module mounts this router, so importing it at the top would be
        # circular.  Its rules decide whose X-Forwarded-For is believed, for both.
        from probe.ops.api import client_address

        return client_address(request, tuple(self.config.http.trusted_proxies))

    def https(self, request: Request) -> bool:
        from probe.ops.api import request_is_https

        return request_is_https(request, tuple(self.config.http.trusted_proxies))

    def language(self, request: Request) -> str:
        """``?lang=`` first, then the cookie it leaves, then the service's language."""
        for candidate in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
            if candidate in LANGUAGES:
                return candidate
        return self.config.ops.language

    # -- rendering ------------------------------------------------------------------------------
    def render(self, request: Request, template: str, user: User | None, *,
               status: int = 200, **context: Any) -> HTMLResponse:
        lang = self.language(request)
        body = self.env.get_template(template).render(
            request=request, user=user, lang=lang, languages=LANGUAGES,
            _=translator(lang), path=request.url.path, lang_links=self.lang_links(request),
            **context)
        response = HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
        self.remember_language(request, response)
        return response

    def remember_language(self, request: Request, response: Response) -> None:
        chosen = request.query_params.get("lang")
        if chosen in LANGUAGES and chosen != request.cookies.get(LANG_COOKIE):
            response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 86400, path="/",
                                samesite="lax", secure=self.https(request))

    def lang_links(self, request: Request) -> dict[str, str]:
        """This page in each language (the other query parameters kept)."""
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
        return {lang: f"{request.url.path}?{urlencode([*params, ('lang', lang)])}"
                for lang in LANGUAGES}

    def set_session(self, request: Request, response: Response, plaintext: str) -> None:
        """The API's cookie, with the API's attributes (probe.ops.api.login)."""
        hours = self.config.http.session_hours
        response.set_cookie(SESSION_COOKIE, plaintext, max_age=int(hours * 3600), path="/",
                            httponly=True, samesite="strict", secure=self.https(request))


# --------------------------------------------------------------------------- filters


def when(value: Any, seconds: bool = False) -> str:
    """A UTC time as operators read it in a ticket: ``2025-03-03 12:00 UTC``."""
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def num(value: Any, digits: int | None = None) -> str:
    """A number for a table cell: as the document holds it (``digits``: rounded to that many
    places); an empty string for None (the template says what a missing value means)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if digits is None:
        return repr(float(value))
    return f"{float(value):.{digits}f}"
