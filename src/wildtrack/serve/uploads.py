"""Defending the service against what a browser (or anything else) can POST: oversized bodies and non-images.

Both checks answer with a precise 4xx, because a field user retrying a photo needs to know *why* it failed
(too big, not a photo, a half-copied file) rather than see a generic server error.
"""

from __future__ import annotations

import asyncio
import io
import json
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Formats a camera or phone produces. Everything else Pillow can open (EPS shells out to Ghostscript, PSD,
# ICO, ...) is refused before decoding: less attack surface, clearer errors. (Phones' multi-picture JPEGs open
# through the JPEG plugin and report format "MPO".)
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")


class UploadError(Exception):
    """A client mistake with the HTTP status that names it (400, 413, 415, 404, ...)."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def inspect_image(data: bytes, max_pixels: int, name: str = "upload") -> ImageInfo:
    """Read only the header: 400 for empty or broken, 415 for non-images, 413 for pixel bombs.

    The pixel check happens before any pixel is decoded, so a 50000×50000 PNG of a few kilobytes costs nothing.
    """
    if not data:
        raise UploadError(400, f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as img:
                info = ImageInfo(str(img.format), int(img.width), int(img.height))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise UploadError(413, f"{name}: image has too many pixels ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise UploadError(
            415, f"{name}: not a supported image; send a photo as JPEG, PNG, WebP, BMP or TIFF"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(400, f"{name}: broken image header ({exc})") from exc
    if info.width * info.height > max_pixels:
        raise UploadError(
            413, f"{name}: {info.width}×{info.height} pixels exceeds this server's limit of {max_pixels:,}"
        )
    return info


class _Refused(Exception):
    """Raised from ``receive`` to stop the app reading a body that will not be accepted."""


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
BODY_IDLE_TIMEOUT_S = 15.0  # at most this long without a byte of a body that is not complete yet


class UploadLimitMiddleware:
    """Bound what bodies in flight can hold: size, number, spooled bytes, time. Each refusal is a JSON answer.

    * A body over ``max_bytes`` is a 413, by Content-Length *and* by counting bytes (Content-Length can be absent
      for chunked uploads, or lie). The check runs while the body streams in, before the multipart parser spools
      it to disk, so a huge upload never fills the disk.
    * At most ``max_uploads`` bodies are in flight (being received, or received and waiting for their answer:
      the multipart parser keeps them in temp files until then) and together at most ``max_spooled_bytes``;
      past either the answer is a 503 with Retry-After, before the body is read.
    * A body must arrive within ``timeout_s`` and never stall for ``BODY_IDLE_TIMEOUT_S``: else 408, and the
      connection is closed, so a client trickling bytes cannot hold a slot.

    * ``large``: paths that take a bigger body and more time (a survey's whole card: ``POST /surveys``), as
      ``{path: (max_bytes, timeout_s)}``; the other bounds hold for them too.

    FastAPI may turn the exception raised from ``receive`` into its own 400 response; that response is
    swallowed and replaced by the refusal.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_uploads: int | None = None,
                 max_spooled_bytes: int | None = None, timeout_s: float | None = None, retry_after_s: int = 2,
                 large: dict[str, tuple[int, float | None]] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.large = large or {}
        self.max_uploads = max_uploads
        self.max_spooled_bytes = max_spooled_bytes
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.uploads = 0  # bodies in flight now
        self.spooled = 0  # their bytes (declared, or received so far)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        max_bytes, timeout_s = self.large.get(scope.get("path", ""), (self.max_bytes, self.timeout_s))
        if declared is not None and declared > max_bytes:
            await self._reject(send, *self._too_large(declared, max_bytes))
            return
        if scope.get("method") not in BODY_METHODS or declared == 0:
            await self.app(scope, receive, send)
            return
        busy = self._busy(declared or 0)
        if busy is not None:
            await self._reject(send, *busy)
            return
        reserved = declared or 0
        self.uploads += 1
        self.spooled += reserved
        try:
            await self._run(scope, receive, send, declared, max_bytes, timeout_s)
        finally:
            self.uploads -= 1
            self.spooled -= reserved

    async def _run(self, scope: Scope, receive: Receive, send: Send, declared: int | None, max_bytes: int,
                   timeout_s: float | None) -> None:
        total = 0
        refusal: tuple[int, str, dict[str, str]] | None = None
        started = False
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        body_done = False

        async def guarded_receive() -> Message:
            nonlocal total, refusal, body_done
            if body_done:  # after the body only a disconnect can come: no timeout on it
                return await receive()
            wait = BODY_IDLE_TIMEOUT_S if deadline is None else min(BODY_IDLE_TIMEOUT_S, deadline - loop.time())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.001))
            except TimeoutError:
                refusal = (408, f"the upload stalled: {total:,} bytes arrived, the rest did not come in time "
                           f"(this server waits {timeout_s or BODY_IDLE_TIMEOUT_S:g} s for a body); send it again",
                           {})
                raise _Refused from None
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                total += size
                body_done = not message.get("more_body", False)
                if total > max_bytes:
                    refusal = self._too_large(total, max_bytes)
                    raise _Refused
                if declared is None:  # chunked: spooled bytes are known only as they arrive
                    self.spooled += size
                    if self.max_spooled_bytes is not None and self.spooled > self.max_spooled_bytes:
                        refusal = self._busy_error()
                        raise _Refused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refusal is not None and not started:
                return  # whatever the app answers to a truncated body, the answer is the refusal
            started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if refusal is None or started:
                raise
        finally:
            if declared is None:
                self.spooled -= total
        if refusal is not None and not started:
            await self._reject(send, *refusal)

    @staticmethod
    def _too_large(size: int, max_bytes: int) -> tuple[int, str, dict[str, str]]:
        return 413, f"upload too large: more than {max_bytes:,} bytes (got at least {size:,})", {}

    def _busy_error(self) -> tuple[int, str, dict[str, str]]:
        return (503, f"the server is receiving too many uploads ({self.uploads} in flight, {self.spooled:,} bytes); "
                f"retry in {self.retry_after_s} s", {"Retry-After": str(self.retry_after_s)})

    def _busy(self, size: int) -> tuple[int, str, dict[str, str]] | None:
        if self.max_uploads is not None and self.uploads >= self.max_uploads:
            return self._busy_error()
        if self.max_spooled_bytes is not None and self.uploads and self.spooled + size > self.max_spooled_bytes:
            return self._busy_error()
        return None

    async def _reject(self, send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"), *((k.lower().encode(), v.encode()) for k, v in headers.items())],
        })
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
