#!/usr/bin/env python3
"""Upload sink for bench/scale (stdlib only): the upstream behind nginx's /upload location.

    scale_sink.py PORT

PUT or POST on any path: reads the whole request body (Content-Length or chunked) into a
reused 1 MiB buffer, then answers 200 "received <bytes>"; the answer comes only after the last
byte, so a client's timing covers the whole upload. GET /stats: {"requests": N, "bytes": B},
the uploads completed since start (bench/scale checks each batch of uploads against it).
Prints "READY <port>" on stdout once listening. HTTP/1.1 keep-alive, one thread per connection.
"""
import http.server
import json
import sys
import threading

BUF = 1 << 20
LOCK = threading.Lock()
STATS = {"requests": 0, "bytes": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the answer's head and body are two writes

    def log_message(self, *args):
        pass

    def _exact(self, mv, left):
        n = 0
        while left:
            k = self.rfile.readinto(mv[: min(left, BUF)])
            if not k:
                raise ConnectionError("body ended early")
            left -= k
            n += k
        return n

    def _read_body(self):
        mv = memoryview(bytearray(BUF))
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            n = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return n
                n += self._exact(mv, size)
                self.rfile.readline()  # CRLF after the chunk
        return self._exact(mv, int(self.headers.get("Content-Length") or 0))

    def _answer(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        n = self._read_body()
        with LOCK:
            STATS["requests"] += 1
            STATS["bytes"] += n
        self._answer(200, f"received {n}\n".encode())

    do_POST = do_PUT

    def do_GET(self):
        if self.path.rstrip("/").endswith("/stats"):
            with LOCK:
                body = json.dumps(STATS).encode()
            self._answer(200, body, "application/json")
        else:
            self._answer(404, b"not found\n")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main():
    port = int(sys.argv[1])
    srv = Server(("127.0.0.1", port), Handler)
    print(f"READY {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
