"""Defending the service against what a browser (or anything else) can POST: oversized bodies and non-images.

Both checks answer with a precise 4xx, because a field user retrying a photo needs to know *why* it failed
(too big, not a photo, a half-copied file) rather than see a generic server error.
"""

from __future__ import annotations

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
# Where an accepted upload is stored on enrolment: the original bytes keep their format's usual extension;
# a format outside this map is re-encoded as PNG (see Catalogue.enroll).
FORMAT_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}


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


class _BodyTooLarge(Exception):
    pass


class UploadLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with a JSON 413, by Content-Length *and* by counting bytes.

    Counting matters because Content-Length can be absent (chunked uploads) or lie. The check runs while the
    body streams in, before the multipart parser spools it to disk, so a huge upload never fills the disk.
    FastAPI may turn the exception raised from ``receive`` into its own 400 response; that response is
    swallowed and replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(send, declared)
            return
        total = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal total, exceeded
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # whatever the app answers to a truncated body, the answer is 413
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await self._reject(send, total)

    async def _reject(self, send: Send, size: int) -> None:
        body = json.dumps(
            {"detail": f"upload too large: more than {self.max_bytes:,} bytes (got at least {size:,})"}
        ).encode()
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
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
