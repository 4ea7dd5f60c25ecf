"""A real HTTP reverse proxy in front of a real S3 server that injects the faults S3 clients meet.

- `error_rate` / `every`: answer a fraction of requests (drawn from a seeded RNG, so a
  serial client sees the same faults every run) or every k-th request with 503 and an
  S3-style XML error (SlowDown or ServiceUnavailable), without forwarding them.
- `restart(down_s)`: the "server restarts": the listening socket closes and every open
  connection is dropped, so connects are refused for `down_s` seconds; then it listens
  again on the same port.
- `cut_next_body(down_s)`: the next object read (GetObject) is cut half-way through its
  body (the client has the headers and part of the data), then the proxy restarts as
  above. Listings and multipart calls are not cut: the S3 SDK's handling of those is its
  own, and our code retries only what it can repeat safely, reads.

The proxy runs in threads of the test process; pyarrow's S3 calls release the GIL, so a
test thread blocked in a read does not block the proxy. The upstream server keeps its
state in memory, which is why the proxy restarts and the server does not.
"""
from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "proxy-authorization", "proxy-authenticate"}
CODES = {"SlowDown": "Please reduce your request rate.",
         "ServiceUnavailable": "Service is unable to handle request."}


class FaultProxy:
    def __init__(self, upstream: str, *, error_rate: float = 0.0, every: int = 0, seed: int = 0):
        host, port = upstream.removeprefix("http://").rstrip("/").split(":")
        self.upstream = (host, int(port))
        self.error_rate, self.every = error_rate, every
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()  # requests, errors, restarts, cut_bodies, dropped
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._cut_down_s: float | None = None
        self._stopped = False
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def faults(self) -> int:
        """Faults injected so far: 503 answers plus restarts."""
        return self.counts["errors"] + self.counts["restarts"]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FaultProxy:
        self._listen()
        return self

    def stop(self) -> None:
        self._stopped = True
        self._close_all()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def restart(self, down_s: float = 1.0) -> None:
        """Close the listener and drop every connection; listen again after `down_s` s."""
        with self._lock:
            self.counts["restarts"] += 1
        self._close_all()

        def back():
            time.sleep(down_s)
            if not self._stopped:
                self._listen()
        threading.Thread(target=back, daemon=True).start()

    def cut_next_body(self, down_s: float = 1.0) -> None:
        """Cut the next response body half-way through, then restart for `down_s` s."""
        self._cut_down_s = down_s

    def set_faults(self, *, error_rate: float | None = None, every: int | None = None) -> None:
        with self._lock:
            self.error_rate = self.error_rate if error_rate is None else error_rate
            self.every = self.every if every is None else every

    # ------------------------------------------------------------------ internals

    def _listen(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _close_all(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = list(self._conns), set()
            self.counts["dropped"] += len(conns)
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone may not.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, addr = listener.accept()
            except OSError:
                return  # closed by _close_all
            with self._lock:
                if self._listener is not listener:  # closed while accepting
                    conn.close()
                    return
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn, addr), daemon=True).start()

    def _serve(self, conn: socket.socket, addr) -> None:
        try:
            _Handler(conn, addr, self)
        except OSError:
            pass  # dropped by a restart, or the client went away
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _decide(self) -> str | None:
        """The injected error code for this request, or None to forward it."""
        with self._lock:
            self.counts["requests"] += 1
            n = self.counts["requests"]
            hit = (self.every and n % self.every == 0) or (self.error_rate and self.rng.random() < self.error_rate)
            if not hit:
                return None
            self.counts["errors"] += 1
            return self.rng.choice(sorted(CODES))

    def _take_cut(self) -> float | None:
        with self._lock:
            down_s, self._cut_down_s = self._cut_down_s, None
            return down_s


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients use it
    server: FaultProxy  # not an http.server: the proxy object that accepted the connection

    def log_message(self, *args) -> None:  # quiet: tests read the counts instead
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _proxy(self) -> None:
        body = self._body()  # read even when failing, so the connection stays usable
        code = self.server._decide()
        if code is not None:
            xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                   f"<Message>{CODES[code]}</Message><Resource>{self.path}</Resource>"
                   f"<RequestId>fault-{self.server.counts['requests']}</RequestId></Error>").encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(xml)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body or "Content-Length" in self.headers or "chunked" in self.headers.get("Transfer-Encoding", ""):
            headers["Content-Length"] = str(len(body))
        up = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        try:
            up.request(self.command, self.path, body=body, headers=headers)
            resp = up.getresponse()
            data = resp.read()
        finally:
            up.close()
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command == "HEAD" or not data:
            return
        down_s = self.server._take_cut() if len(data) > 1 and self._object_read() else None
        if down_s is None:
            self.wfile.write(data)
            return
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        with self.server._lock:
            self.server.counts["cut_bodies"] += 1
        self.server.restart(down_s)
        self.close_connection = True

    def _object_read(self) -> bool:
        """A GetObject (path-style /bucket/key), not a listing or a multipart call."""
        path, _, query = self.path.partition("?")
        return (self.command == "GET" and path.strip("/").count("/") >= 1
                and not any(q in query for q in ("list-type", "uploads", "uploadId")))

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _proxy
