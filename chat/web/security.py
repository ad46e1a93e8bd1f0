"""Request hygiene: CSRF tokens, same-origin checks for sockets, and the
security headers every response carries."""
import hmac
import secrets
from urllib.parse import parse_qsl
from urllib.parse import urlsplit

from flask import abort
from flask import request
from flask import session
from werkzeug.exceptions import Forbidden

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class CsrfRefused(Forbidden):
    """A post without the session's CSRF token (a page from an older session,
    or a form from another site)."""

    description = "This form has expired or did not come from this site. Reload the page and try again."


def csrf_token():
    """The session's CSRF token, created on first use."""
    token = session.get("csrf")
    if token is None:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf():
    """Refuse (403, ``CsrfRefused``) a state-changing request without the session's token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    expected = session.get("csrf")
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise CsrfRefused()


def same_origin():
    """True when the request's Origin header names this host (sockets, CSRF backstop)."""
    origin = request.headers.get("Origin")
    if not origin:
        return False
    parts = urlsplit(origin)
    return parts.netloc == request.host and parts.scheme in ("http", "https")


def add_security_headers(response):
    """Strict CSP and friends; streams also say not to be cached or buffered."""
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def require_utf8_form():
    """Refuse a form body that is not UTF-8 (Werkzeug would quietly re-quote or
    drop the bad bytes, storing something the person never typed). Runs before
    anything reads the form."""
    if request.method != "POST" or request.mimetype != "application/x-www-form-urlencoded":
        return None
    raw = request.get_data(cache=True)  # the form is then parsed from this copy
    try:
        parse_qsl(raw.decode("ascii"), encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        abort(400, description="The message could not be read: it is not valid UTF-8 text.")
    return None
