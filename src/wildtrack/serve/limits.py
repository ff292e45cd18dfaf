"""Admission control: at most N photos decoded and searched at once, a waiting room bounded by size and by
waiting time, then a fast 503.

Without it, 24 concurrent uploads of a 7700×7700 PNG each decoded their own 180 MB frame at once and took the
server from 3.2 to 7.5 GB. Requests wait here on the event loop (no thread, no decoded pixels), so memory is
bounded by ``max_concurrent`` decodes, and a client past ``max_queued`` photos, or one that would wait longer than
``max_wait_s``, learns at once to retry later instead of waiting behind a queue it cannot see. The queue is
counted in photos, not requests: one encounter of eight photos holds its slot eight times as long as one photo.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from wildtrack.serve.uploads import UploadError

SMOOTHING = 0.2  # weight of the newest photo in the running mean of seconds per photo


class InferenceGate:
    """An asyncio semaphore with a bounded waiting room; :meth:`slot` raises a 503 with Retry-After when full,
    when the expected wait exceeds ``max_wait_s``, or when a request has waited that long after all."""

    def __init__(self, max_concurrent: int | None = None, max_queued: int = 32, retry_after_s: int = 2,
                 max_wait_s: float | None = None) -> None:
        self.max_concurrent = max_concurrent or max(1, os.cpu_count() or 1)
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
        self.max_wait_s = max_wait_s
        self._semaphore = asyncio.Semaphore(self.max_concurrent)
        self.waiting = 0  # requests
        self.waiting_photos = 0
        self.running = 0
        self.running_photos = 0
        self.seconds_per_photo: float | None = None  # measured: nothing is refused for waiting time before

    def expected_wait(self, photos: int = 1) -> float:
        """Seconds a request of ``photos`` arriving now would wait for a slot (0 until a photo was measured)."""
        if self.seconds_per_photo is None or not self._semaphore.locked():
            return 0.0
        return (self.running_photos + self.waiting_photos) * self.seconds_per_photo / self.max_concurrent

    def _busy(self, why: str) -> UploadError:
        return UploadError(
            503, f"the server is busy ({self.running} requests in progress, {self.waiting} waiting; {why}); "
            f"retry in {self.retry_after_s} s", headers={"Retry-After": str(self.retry_after_s)})

    @asynccontextmanager
    async def slot(self, photos: int = 1) -> AsyncIterator[None]:
        photos = max(1, photos)
        if self._semaphore.locked() and self.waiting and self.waiting_photos + photos > self.max_queued:
            raise self._busy(f"at most {self.max_queued} photos may wait")
        if self._semaphore.locked() and self.waiting >= self.max_queued:
            raise self._busy(f"at most {self.max_queued} photos may wait")
        wait = self.expected_wait(photos)
        if self.max_wait_s is not None and wait > self.max_wait_s:
            raise self._busy(f"about {wait:.0f} s of work is queued, more than this server's {self.max_wait_s:g} s")
        self.waiting += 1
        self.waiting_photos += photos
        try:
            if self.max_wait_s is None:
                await self._semaphore.acquire()
            else:
                try:
                    await asyncio.wait_for(self._semaphore.acquire(), self.max_wait_s)
                except TimeoutError:
                    raise self._busy(f"waited {self.max_wait_s:g} s for a slot") from None
        finally:
            self.waiting -= 1
            self.waiting_photos -= photos
        self.running += 1
        self.running_photos += photos
        started = time.monotonic()
        try:
            yield
        finally:
            self.running -= 1
            self.running_photos -= photos
            self._semaphore.release()
            per_photo = (time.monotonic() - started) / photos
            self.seconds_per_photo = (per_photo if self.seconds_per_photo is None
                                      else (1 - SMOOTHING) * self.seconds_per_photo + SMOOTHING * per_photo)
