"""Admission control: at most N photos decoded and searched at once, a bounded queue, then a fast 503.

Without it, 24 concurrent uploads of a 7700×7700 PNG each decoded their own 180 MB frame at once and took the
server from 3.2 to 7.5 GB. Requests wait here on the event loop (no thread, no decoded pixels), so memory is
bounded by ``max_concurrent`` decodes, and a client past ``max_queued`` learns at once to retry later instead of
waiting behind a queue it cannot see.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from wildtrack.serve.uploads import UploadError


class InferenceGate:
    """An asyncio semaphore with a bounded waiting room; :meth:`slot` raises a 503 with Retry-After when full."""

    def __init__(self, max_concurrent: int | None = None, max_queued: int = 32, retry_after_s: int = 2) -> None:
        self.max_concurrent = max_concurrent or max(1, os.cpu_count() or 1)
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
        self._semaphore = asyncio.Semaphore(self.max_concurrent)
        self.waiting = 0
        self.running = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._semaphore.locked() and self.waiting >= self.max_queued:
            raise UploadError(
                503, f"the server is busy ({self.running} photos in progress, {self.waiting} waiting); "
                f"retry in {self.retry_after_s} s", headers={"Retry-After": str(self.retry_after_s)})
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._semaphore.release()
