"""A real HTTP server that takes the ingest's `POST /v1/readings` and records what it stored, keyed
like the readings table ((device, sensor, ts): a repeated reading stores nothing). It is NOT the
ingest service: it exists to put agents through failures on command: `mode` = ok, 503 (with
Retry-After), 429, 500, stall (answers after `stall_s`), reject (422 naming index 0); a batch of
more than `max_batch` readings gets 413.
`python -m tests.recording_receiver --port 8099` serves until killed (lab tier)."""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RecordingReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.mode, self.stall_s = "ok", 2.0
        self.max_batch: int | None = None
        self.stored: dict[tuple, dict] = {}
        self.repeats = 0  # readings that arrived again after being stored (retries after a lost answer)
        self.requests = 0
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()  # open client connections (kept alive)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with receiver.lock:
                    receiver.connections.add(self.connection)

            def finish(self):
                with receiver.lock:
                    receiver.connections.discard(self.connection)
                super().finish()

            def answer(self, status: int, body: dict, headers: dict | None = None) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(payload)), **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                with receiver.lock:
                    body = {"stored": len(receiver.stored), "repeats": receiver.repeats, "requests": receiver.requests}
                self.answer(200, body)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                with receiver.lock:
                    receiver.requests += 1
                    mode = receiver.mode
                if not token.startswith("mds1."):
                    return self.answer(401, {"error": "unauthorized"})
                if mode == "503":
                    return self.answer(503, {"error": "database unavailable"}, {"Retry-After": "1"})
                if mode == "429":
                    return self.answer(429, {"error": "queue full"}, {"Retry-After": "1"})
                if mode == "500":
                    return self.answer(500, {"error": "boom"})
                if mode == "reject":
                    return self.answer(422, {"error": "readings[0]: ts is outside the accepted window", "index": 0})
                device = token.split(".")[1]
                readings = json.loads(raw)["readings"]
                if receiver.max_batch is not None and len(readings) > receiver.max_batch:
                    return self.answer(413, {"error": f"readings holds {len(readings)} readings; at most {receiver.max_batch}"})
                with receiver.lock:
                    for r in readings:
                        key = (device, r["sensor"], r["ts"])
                        if key in receiver.stored:
                            receiver.repeats += 1
                        receiver.stored[key] = r
                if mode == "stall":  # stored, but the answer comes too late: the agent will resend
                    time.sleep(receiver.stall_s)
                self.answer(200, {"stored": len(readings), "device": device})

        self.handler, self.host, self.serving = Handler, host, False
        self.server = self._listen(port)
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def _listen(self, port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer((self.host, port), self.handler)
        server.daemon_threads = True
        return server

    def _serve(self) -> None:
        if not self.serving:
            self.serving = True
            threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def go_away(self) -> None:
        """Stop listening and drop the kept-alive connections: connections are refused until `come_back`."""
        if self.serving:
            self.server.shutdown()
            self.serving = False
        self.server.server_close()
        with self.lock:
            for connection in self.connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.connections.clear()

    def come_back(self) -> None:
        self.server = self._listen(self.server.server_address[1])
        self._serve()

    def __enter__(self) -> RecordingReceiver:
        self._serve()
        return self

    def __exit__(self, *exc) -> None:
        self.go_away()


def main() -> None:
    parser = argparse.ArgumentParser(description="recording receiver (not the ingest service)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    receiver = RecordingReceiver(args.host, args.port)
    receiver.server.serve_forever()


if __name__ == "__main__":
    main()
