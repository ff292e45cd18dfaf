#!/usr/bin/env python
"""Probe the service's bounds on uploads in flight, as a client that never finishes its uploads would.

Against a running server (``--url``): (1) ``--big`` uploads of ``--big-mb`` MB each sent whole but for the final
boundary (the multipart parser spools each to a temp file), held open; (2) ``--trickle`` connections each
declaring a 1 MB body and sending one byte every ``--every`` seconds. Prints how many were refused at once
(status and time), and how many connections are still open after each ``--report`` seconds.

    python scripts/probe_upload_bounds.py --url http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import select
import socket
import time
from urllib.parse import urlsplit


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--big", type=int, default=20)
    p.add_argument("--big-mb", type=float, default=19.0)
    p.add_argument("--trickle", type=int, default=300)
    p.add_argument("--every", type=float, default=2.0)
    p.add_argument("--report", type=float, nargs="+", default=[5, 46, 75])
    return p.parse_args()


def open_upload(url: str, declared: int, first: bytes) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    head = (f"POST /predict HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    sock.sendall(head + first)
    return sock


def status_if_answered(sock: socket.socket) -> str | None:
    """'408', '503', 'closed' once the server answered or closed, else None (still open, unanswered)."""
    ready, _, _ = select.select([sock], [], [], 0)
    if not ready:
        return None
    try:
        data = sock.recv(4096)
    except OSError:
        return "closed"
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"


def main() -> None:
    args = parse_args()
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    size = int(args.big_mb * 1024 * 1024)
    big = []
    for _ in range(args.big):
        try:
            big.append(open_upload(args.url, len(part) + size + 8, part + b"\0" * size))
        except OSError as exc:  # refused while sending: the server closed the connection
            print(f"big upload refused while sending: {exc}")
    time.sleep(1)
    answered = [status_if_answered(s) for s in big]
    print(f"{args.big} uploads of {args.big_mb:g} MB, one boundary short: "
          f"{sum(a is None for a in answered)} held, answered {sorted(a for a in answered if a)}")
    started = time.monotonic()
    trickle = [open_upload(args.url, 1_000_000, part) for _ in range(args.trickle)]
    statuses: dict[int, str] = {}
    for deadline in args.report:
        while time.monotonic() - started < deadline:
            for n, s in enumerate(trickle):
                if n in statuses:
                    continue
                answer = status_if_answered(s)
                if answer is not None:
                    statuses[n] = answer
                else:
                    try:
                        s.send(b"\0")
                    except OSError:
                        statuses[n] = "closed"
            time.sleep(args.every)
        counts: dict[str, int] = {}
        for a in statuses.values():
            counts[a] = counts.get(a, 0) + 1
        print(f"after {deadline:g} s: {args.trickle - len(statuses)} of {args.trickle} trickling connections open; "
              f"answered {dict(sorted(counts.items()))}")
    for s in big + trickle:
        s.close()


if __name__ == "__main__":
    main()
