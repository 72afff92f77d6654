"""A JSON answering HTTP server on loopback, for the channels whose providers answer 200 with a
verdict in the body (WeCom and DingTalk robots, the SMS providers' APIs)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: (path with query, request headers, raw body) -> the JSON document to answer.
Answer = Callable[[str, dict[str, str], bytes], dict[str, Any]]


def serve_json(answer: Answer) -> tuple[ThreadingHTTPServer, str]:
    """Start a threaded server answering every POST with ``answer(...)`` as JSON (status 200);
    returns the server (``shutdown()`` it) and its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps(answer(self.path, dict(self.headers.items()), raw)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
