#!/usr/bin/env python3
"""A real upstream process for the integration tests and the demo (stdlib only).

Binds 127.0.0.1 on the given port (0 = a free one), prints "READY <port>" on stdout, then serves:
  ANY  /echo/...         JSON: method, path, query, headers (lower-cased name -> list), body_len
  GET  /download?size=N  N bytes, streamed in 64 KiB chunks (Content-Length set)
  POST /upload           reads a (chunked or sized) body without keeping it, answers {"received": N}
  GET  /sse?n=N&interval_ms=M   N server-sent events, M ms apart, each flushed at once
  GET  /slow?ms=M        answers after M ms
  GET  /status?code=C    answers with status C
  GET  .../set-cookies?c=N=V sets each c as a Set-Cookie line (a backend setting cookies, any name)
  GET  /ws, .../ws       WebSocket echo (text and binary frames)
  GET  /switch           101 Switching Protocols (Upgrade: h2c) whatever was asked
  GET  /__conns          {"connections": N}: TCP connections accepted so far
  GET  /__requests       {"requests": [{method, path}]}: every request routed so far
  any request with an Upgrade other than websocket: 101, then every byte the client sends
                         afterwards is answered as "HTTP/1.1 200" with body "TUNNELLED <bytes>"
                         (what an h2c-accepting backend would let through)
  anything else          like /echo
Options: --port P, --tls CERT KEY (serve https).
"""
import base64, hashlib, json, socket, ssl, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections = 0
    seen, seen_lock = [], threading.Lock()  # every request's method and path (/__requests)
    lock = threading.Lock()

    def setup(self):
        with Handler.lock:
            Handler.connections += 1
        super().setup()

    def log_message(self, *args):  # keep test output quiet
        pass

    # --- helpers -------------------------------------------------------------------------
    def read_body(self, keep=True):
        """Reads the request body (Content-Length or chunked); returns (length, bytes or None)."""
        total, parts = 0, []
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = size
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        raise ConnectionError("truncated chunk")
                    remaining -= len(chunk)
                    total += len(chunk)
                    if keep:
                        parts.append(chunk)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    raise ConnectionError("truncated body")
                remaining -= len(chunk)
                total += len(chunk)
                if keep:
                    parts.append(chunk)
        return total, (b"".join(parts) if keep else None)

    def send_json(self, obj, status=200):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def query(self):
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    # --- routes --------------------------------------------------------------------------
    def route(self):
        path = urlsplit(self.path).path
        q = self.query()
        if path == "/__requests":
            return self.send_json({"requests": Handler.seen})
        with Handler.seen_lock:
            Handler.seen.append({"method": self.command, "path": path})
        if path == "/download":
            size = int(q.get("size", "0"))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            block = b"x" * (1 << 16)
            while size:
                n = min(size, len(block))
                self.wfile.write(block[:n])
                size -= n
            return
        if path == "/upload":
            n, _ = self.read_body(keep=False)
            return self.send_json({"received": n})
        if path == "/sse":
            self.read_body(keep=False)
            self.send_response(200)
            self.send_header("Content-Type", q.get("type", "text/event-stream"))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            n, interval = int(q.get("n", "5")), int(q.get("interval_ms", "200")) / 1000
            for i in range(n):
                event = f"data: event {i} at {time.time():.3f}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
                if i + 1 < n:
                    time.sleep(interval)
            self.wfile.write(b"0\r\n\r\n")
            return
        if path == "/slow":
            self.read_body(keep=False)
            time.sleep(int(q.get("ms", "1000")) / 1000)
            return self.send_json({"slept_ms": int(q.get("ms", "1000"))})
        if path.endswith("/set-cookies"):
            self.read_body(keep=False)
            body = b"{}"
            self.send_response(200)
            for c in parse_qs(urlsplit(self.path).query).get("c", []):
                self.send_header("Set-Cookie", c)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if path == "/status":
            self.read_body(keep=False)
            return self.send_json({"status": int(q["code"])}, status=int(q["code"]))
        if (path == "/ws" or path.endswith("/ws")) and self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        if path == "/__conns":
            return self.send_json({"connections": Handler.connections})
        if path == "/switch":
            self.send_response(101)
            self.send_header("Upgrade", "h2c")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.close_connection = True
            return
        upgrade = self.headers.get("Upgrade", "")
        if upgrade and upgrade.lower() != "websocket":
            return self.any_upgrade(upgrade)
        n, body = self.read_body()
        headers = {}
        for k, v in self.headers.items():
            headers.setdefault(k.lower(), []).append(v)
        self.send_json({
            "method": self.command,
            "path": path,
            "query": urlsplit(self.path).query,
            "headers": headers,
            "body_len": n,
            "body": body[:4096].decode("utf-8", "replace"),
        })

    def any_upgrade(self, proto):
        self.send_response(101)
        self.send_header("Upgrade", proto)
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        data = self.connection.recv(65536)
        body = b"TUNNELLED " + data
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        self.wfile.flush()
        self.close_connection = True

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                break
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 0x8:  # close: echo it and stop
                self.wfile.write(bytes([0x88, len(data)]) + data)
                break
            if len(data) < 126:
                frame = bytes([0x80 | opcode, len(data)])
            else:
                frame = bytes([0x80 | opcode, 126]) + struct.pack(">H", len(data))
            self.wfile.write(frame + data)
            self.wfile.flush()
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = route


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that left before its answer (the 504 test) is not an error worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def main():
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1]) if "--port" in args else 0
    server = Server(("127.0.0.1", port), Handler)
    if "--tls" in args:
        i = args.index("--tls")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args[i + 1], args[i + 2])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
