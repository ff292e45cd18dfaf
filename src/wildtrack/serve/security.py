"""Who may talk to the service: Host checks, cross-site refusal and the API token for writes.

A field laptop serves on 127.0.0.1, yet any web page open in its browser can make that browser send requests to
it. Three checks keep such pages out:

* ``Host`` must name this server (an IP literal, ``localhost``, this machine's name or a configured allowed
  host), so a page on ``evil.example`` whose DNS name is re-bound to 127.0.0.1 is refused (400).
* A POST whose ``Origin`` is not this server's, or whose ``Sec-Fetch-Site`` is ``cross-site``/``same-site``,
  is refused (403). Browsers send these headers; scripts (curl, Python) send neither and are unaffected.
* With an API token configured, write endpoints (``/enroll``, and the surveys': starting one, deciding, applying)
  need it as ``Authorization: Bearer <token>`` or
  ``X-API-Token: <token>`` (401 otherwise). Without one, writes are only accepted on a loopback connection that
  no proxy relayed (no ``Forwarded``/``X-Forwarded-*`` header) unless the server was started with
  ``insecure_no_token``.

Every answer carries headers that stop another site from framing the page or a browser from guessing types.
The start-up rule (no token beyond loopback) is :func:`check_bind`'s, applied by every way of starting the app;
a request that arrives on another interface of a server that was started without it anyway (an unknown launcher)
is refused whole.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wildtrack.config import ServeConfig

log = logging.getLogger(__name__)

WRITE_PATHS = frozenset({"/enroll", "/surveys"})
# A survey's decisions choose what its apply enrols, so writing them is a write to the catalogue-to-be too.
WRITE_PATTERN = re.compile(r"/surveys/[^/]+/(?:decisions|apply)")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
TOKEN_ENV = "WILDTRACK_API_TOKEN"
MIN_TOKEN_LENGTH = 8
SINGLE_HEADERS = ("host", "origin", "sec-fetch-site")
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto")
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
# A Host header: a DNS name or IPv4 literal, or a bracketed IPv6 literal, then an optional port. Nothing else
# (``127.0.0.1:8765@evil.example`` is not a host).
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


class StartupRefused(ValueError):
    """The configuration would expose writes to the network without protection."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the localhost names."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_write_path(path: str) -> bool:
    """Whether a POST to ``path`` changes the catalogue (or what a survey will enrol into it)."""
    return path in WRITE_PATHS or WRITE_PATTERN.fullmatch(path) is not None


def check_token(token: str | None) -> None:
    """Refuse a token that could never work, without echoing it (start-up output ends up in logs)."""
    if token is None:
        return
    if not token.isascii() or not token.isprintable() or token != token.strip():
        raise StartupRefused("the API token must be printable ASCII without spaces at either end (an HTTP header "
                             "cannot carry anything else, so it could never match); choose another")
    if len(token) < MIN_TOKEN_LENGTH:
        raise StartupRefused(f"the API token is too short ({len(token)} characters): use at least {MIN_TOKEN_LENGTH}, "
                             "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`")


def check_bind(cfg: ServeConfig, proxied: bool = False) -> None:
    """Refuse to listen beyond loopback (or behind a proxy that forwards other machines' requests) without a token
    unless explicitly allowed (then warn loudly)."""
    check_token(cfg.api_token)
    if cfg.api_token or (is_loopback(cfg.host) and not proxied):
        return
    if not cfg.insecure_no_token:
        where = f"behind a proxy (--forwarded-allow-ips) on {cfg.host}" if proxied else f"on {cfg.host}"
        raise StartupRefused(
            f"refusing to listen {where} without an API token: anyone on the network could enrol photos. "
            f"Set --api-token, --api-token-file or {TOKEN_ENV}, or pass --insecure-no-token if this network is trusted"
        )
    log.warning("!" * 100)
    log.warning("INSECURE: listening on %s WITHOUT an API token: anyone who can reach this machine can enrol photos "
                "and change the catalogue. Use --api-token on untrusted networks.", cfg.host)
    log.warning("!" * 100)


@dataclass(frozen=True)
class Bind:
    host: str | None  # None: not started by the uvicorn command line (its launcher must pass the host itself)
    proxied: bool = False  # trusts forwarded headers from machines other than this one


def uvicorn_bind(argv: list[str] | None = None) -> Bind:
    """Where ``uvicorn --factory`` was told to listen (its command line and ``UVICORN_*`` variables), so the
    factory applies the same start-up rule as ``wildtrack serve``."""
    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).name not in ("uvicorn", "__main__.py") or "--factory" not in argv:
        return Bind(None)
    try:
        from uvicorn.main import main as uvicorn_command

        params = uvicorn_command.make_context("uvicorn", list(argv[1:]), resilient_parsing=True).params
    except Exception:  # an unknown uvicorn: the request-time refusal in AccessMiddleware still holds
        log.warning("cannot read uvicorn's command line; the start-up check uses the configured host")
        return Bind(None)
    if params.get("uds") or params.get("fd") is not None:
        return Bind(None)
    proxied = bool(params.get("proxy_headers", True)) and trusts_other_machines(params.get("forwarded_allow_ips"))
    return Bind(str(params.get("host") or "127.0.0.1"), proxied)


def trusts_other_machines(forwarded_allow_ips: str | None) -> bool:
    """True when uvicorn's ``--forwarded-allow-ips`` (or ``FORWARDED_ALLOW_IPS``) trusts another machine's proxy."""
    trusted = [ip.strip() for ip in str(forwarded_allow_ips or "").split(",") if ip.strip()]
    return any(ip == "*" or not is_loopback(ip.split("/")[0]) for ip in trusted)


class AccessMiddleware:
    """The checks of the module docstring, before any route runs (pure ASGI: no body is read); every answer, a
    refusal too, gets :data:`SECURITY_HEADERS`."""

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app = app
        self.token = config.api_token
        self.insecure = config.insecure_no_token
        names = {config.host, socket.gethostname(), f"{socket.gethostname()}.local", *config.allowed_hosts}
        self.allowed_names = {n.strip("[]").lower() for n in names if n} | LOOPBACK_NAMES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send(message)

        raw = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", ())]
        names = [k for k, _ in raw]
        repeated = sorted({k for k in SINGLE_HEADERS if names.count(k) > 1})  # which one would count is ambiguous
        refusal = ((400, f"repeated {', '.join(repeated)} header: send each once", []) if repeated
                   else self._refusal(scope, dict(raw)))
        if refusal is None:
            await self.app(scope, receive, send_with_headers)
            return
        status, detail, extra = refusal
        log.warning("refused %s %s: %s", scope.get("method"), scope.get("path"), detail)
        await _send_json(send_with_headers, status, detail, extra)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        host = headers.get("host", "")
        if not self._host_allowed(host):
            return 400, (f"Host {host!r} is not this server's name; start the server with --allowed-host "
                         f"{_hostname(host) or 'NAME'} if that is how clients reach it"), []
        local_addr = (scope.get("server") or ("", 0))[0] or ""  # interface the connection came in on
        if not self.token and not self.insecure and local_addr and not is_loopback(local_addr):
            return 403, ("this server was started on a network interface without an API token; restart it with "
                         f"--api-token (or {TOKEN_ENV}), or --insecure-no-token on a trusted network"), []
        if scope.get("method") not in UNSAFE_METHODS:
            return None
        cross = _cross_site(headers, host, str(scope.get("scheme") or "http"))
        if cross:
            return 403, f"cross-site request refused ({cross}): only pages served by this server may send it", []
        if not is_write_path(str(scope.get("path") or "")):
            return None
        if self.token:
            if not _token_matches(headers, self.token):
                return 401, ("this server requires an API token for writes: send it as 'Authorization: Bearer "
                             "<token>' or 'X-API-Token: <token>'"), [(b"www-authenticate", b"Bearer")]
            return None
        relayed = any(h in headers for h in PROXY_HEADERS)  # a reverse proxy on this machine: any client at all
        if not self.insecure and ((local_addr and not is_loopback(local_addr)) or relayed):
            return 403, ("writes over the network (or through a proxy) need an API token: restart the server with "
                         "--api-token (or --insecure-no-token on a trusted network)"), []
        return None

    def _host_allowed(self, host: str) -> bool:
        if not _HOST.fullmatch(host.strip().lower()):
            return False
        name = _hostname(host)
        if not name:
            return False
        try:
            ipaddress.ip_address(name)
            return True  # a page reached by IP literal is not a re-bound DNS name
        except ValueError:
            return name in self.allowed_names


def _hostname(host: str) -> str:
    """``Host`` header without its port, lower-case, IPv6 brackets removed."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _cross_site(headers: dict[str, str], host: str, scheme: str) -> str | None:
    """Why this browser request comes from another site, or None (same origin, or not a browser)."""
    origin = headers.get("origin")
    if origin is not None:
        if origin == "null":
            return "Origin: null"
        try:
            parts = urlsplit(origin.strip())
        except ValueError:
            return f"Origin {origin}"
        if parts.scheme.lower() != scheme.lower() or parts.netloc.lower() != host.strip().lower() or parts.path:
            return f"Origin {origin}"
        return None
    site = headers.get("sec-fetch-site", "").strip().lower()
    if site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {site}"
    return None


def _token_matches(headers: dict[str, str], token: str) -> bool:
    auth = headers.get("authorization", "")
    sent = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-token", "")
    return bool(sent) and hmac.compare_digest(sent.encode(), token.encode())


async def _send_json(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})
