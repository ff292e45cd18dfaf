"""Who may talk to the service: Host checks, cross-site refusal and the API token for writes.

A field laptop serves on 127.0.0.1, yet any web page open in its browser can make that browser send requests to
it. Three checks keep such pages out:

* ``Host`` must name this server (an IP literal, ``localhost``, this machine's name or a configured allowed
  host), so a page on ``evil.example`` whose DNS name is re-bound to 127.0.0.1 is refused (400).
* A POST whose ``Origin`` is not this server's, or whose ``Sec-Fetch-Site`` is ``cross-site``/``same-site``,
  is refused (403). Browsers send these headers; scripts (curl, Python) send neither and are unaffected.
* With an API token configured, write endpoints (``/enroll``) need it as ``Authorization: Bearer <token>`` or
  ``X-API-Token: <token>`` (401 otherwise). Without one, writes are only accepted on a loopback connection
  unless the server was started with ``insecure_no_token``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from wildtrack.config import ServeConfig

log = logging.getLogger(__name__)

WRITE_PATHS = frozenset({"/enroll"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
TOKEN_ENV = "WILDTRACK_API_TOKEN"


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


def check_bind(cfg: ServeConfig) -> None:
    """Refuse to listen beyond loopback without a token unless explicitly allowed (then warn loudly)."""
    if is_loopback(cfg.host) or cfg.api_token:
        return
    if not cfg.insecure_no_token:
        raise StartupRefused(
            f"refusing to listen on {cfg.host} without an API token: anyone on the network could enrol photos. "
            f"Set --api-token (or {TOKEN_ENV}), or pass --insecure-no-token if this network is trusted"
        )
    log.warning("!" * 100)
    log.warning("INSECURE: listening on %s WITHOUT an API token: anyone who can reach this machine can enrol photos "
                "and change the catalogue. Use --api-token on untrusted networks.", cfg.host)
    log.warning("!" * 100)


class AccessMiddleware:
    """The three checks of the module docstring, before any route runs (pure ASGI: no body is read)."""

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
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, detail, extra = refusal
        log.warning("refused %s %s: %s", scope.get("method"), scope.get("path"), detail)
        await _send_json(send, status, detail, extra)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        host = headers.get("host", "")
        if not self._host_allowed(host):
            return 400, (f"Host {host!r} is not this server's name; start the server with --allowed-host "
                         f"{_hostname(host) or 'NAME'} if that is how clients reach it"), []
        if scope.get("method") not in UNSAFE_METHODS:
            return None
        cross = _cross_site(headers, host)
        if cross:
            return 403, f"cross-site request refused ({cross}): only pages served by this server may send it", []
        if scope.get("path") not in WRITE_PATHS:
            return None
        if self.token:
            if not _token_matches(headers, self.token):
                return 401, ("this server requires an API token for writes: send it as 'Authorization: Bearer "
                             "<token>' or 'X-API-Token: <token>'"), [(b"www-authenticate", b"Bearer")]
            return None
        local_addr = (scope.get("server") or ("", 0))[0] or ""  # interface the connection came in on
        if not self.insecure and local_addr and not is_loopback(local_addr):
            return 403, ("writes over the network need an API token: restart the server with --api-token "
                         "(or --insecure-no-token on a trusted network)"), []
        return None

    def _host_allowed(self, host: str) -> bool:
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


def _cross_site(headers: dict[str, str], host: str) -> str | None:
    """Why this browser request comes from another site, or None (same origin, or not a browser)."""
    origin = headers.get("origin")
    if origin is not None:
        if origin == "null":
            return "Origin: null"
        parts = urlsplit(origin)
        if parts.netloc.lower() != host.strip().lower():
            return f"Origin {origin}"
        return None
    site = headers.get("sec-fetch-site")
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
