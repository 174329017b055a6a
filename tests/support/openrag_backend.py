#!/usr/bin/env python3
"""A stand-in for the OpenRag backend in AUTH_MODE=token: what sso-sidecar fronts (stdlib only).

Usage:
    AUTH_TOKEN=<admin token, >= 12 chars> python3 tests/support/openrag_backend.py \
        [--port 0] [--users-file FILE] [--test-hooks] [--auth-failure-limit N] \
        [--conflict-status 409|500] [--keep-alive-timeout 5]

Binds 127.0.0.1 (port 0 = a free one) and prints exactly "READY <port>" on stdout; nothing else is
ever written to stdout (errors go to stderr). HTTP/1.1 with keep-alive; an idle connection is closed
after --keep-alive-timeout seconds (5, uvicorn's default; 0 = never).

Reproduces /work/shared/reference/openrag-auth-behaviour.md §5 and §6 (token mode only):
  * AUTH_TOKEN bootstraps user 1 ("Admin", is_admin). --users-file seeds more users from a JSON list of
    {"display_name", "external_user_id", "email", "is_admin", "token", "file_quota"}: "token" is in
    clear in the file (null/absent = no token, like an auto-provisioned user); only its SHA-256 is kept.
  * Auth: "Authorization: Bearer <token>" (case-insensitive "bearer " prefix, the rest taken verbatim);
    paths starting with /static take the token from the first "token" query parameter ONLY; /chainlit
    and /chainlit/* take the openrag_session, then the openrag_chainlit_token cookie (Chainlit's own
    header-auth), then a bearer. Missing -> 403 {"detail":"Missing token"}, unknown -> 403
    {"detail":"Invalid token"}. Public: /health_check /ready /version /docs /openapi.json /redoc /metrics
    /auth/login /auth/callback /auth/logout /auth/backchannel-logout /auth/chainlit-logout-signal and
    /assets/*. The four /auth flow routes answer 400 (AUTH_MODE is not 'oidc').
  * The users admin API of §6.1 (GET/POST /users/, GET /users/info, GET/PATCH/DELETE /users/{id},
    POST /users/{id}/regenerate_token), plus GET /auth/me and POST/DELETE /auth/chainlit-session.
  * /static itself (no trailing slash), once authenticated, answers what Starlette's redirect_slashes
    answers for OpenRag's StaticFiles mount: 307, Location <scheme>://<Host>/static/?<query>, the query
    kept as sent (so with the token parameter in it).
  * Every other path (authenticated, or public) answers 200 with a JSON echo: path, raw_path, method,
    query, user, auth_via ("bearer" | "query" | "cookie" | null), auth_cookie, headers (lower-cased
    name -> [values]), cookies (cookie NAMES, in order, duplicates kept), body_length, body_sha256,
    body (first 4 KiB), client_ip, public.
  * --test-hooks adds (no auth; not OpenRag): GET /__test/users (every user with token_sha256),
    GET /__test/requests (total, by_path counts, the last 50 {method, path, status, auth_via, user_id}),
    DELETE /__test/requests (reset the log). And one AUTHENTICATED hook (the token is checked and the
    request logged as on any route): GET /__test/refuse/<code>?detail=D answers <code> {"detail": D},
    a route refusing a valid user for its own reasons (Chainlit's 401 "Invalid authentication token",
    a 403 "Invalid token" relayed from a provider). Without --test-hooks these paths are echoed.
  * --auth-failure-limit N (default 0 = off) emulates RATE_LIMIT_AUTH_FAILURE: after N failed
    authentications in 60 s from one client IP, every non-public request from it gets 429.
  * --generation 1.1.8|later (default later): 1.1.8 lets any user regenerate any user's token
    (`POST /users/{id}/regenerate_token` has no permission check there); later ones require admin or self.
  * --conflict-status: a duplicate external_user_id/email gives 409 (default) or 500, the generic
    error OpenRag's code would likely produce for an unhandled unique violation (spec §11.4).
Env: AUTH_TOKEN (required), AUTH_MODE (must be token if set), ALLOW_INSECURE_SECRETS,
DEFAULT_FILE_QUOTA (-1), WITH_CHAINLIT_UI (true), PREFERRED_URL_SCHEME, UVICORN_FORWARDED_ALLOW_IPS.
"""
import argparse
import hashlib
import http.cookies
import json
import os
import re
import secrets
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

BYPASS_PATHS = {
    "/docs", "/openapi.json", "/redoc", "/health_check", "/ready", "/version",
    "/auth/login", "/auth/callback", "/auth/backchannel-logout", "/auth/logout",
    "/auth/chainlit-logout-signal", "/metrics",
}
AUTH_FLOW_ROUTES = {  # answer 400 in token mode (the AUTH_MODE gate of §2)
    "/auth/login": "GET", "/auth/callback": "GET", "/auth/logout": "GET", "/auth/backchannel-logout": "POST",
}
AUTH_MODE_GATE = "AUTH_MODE is not 'oidc' \u2014 authentication routes are disabled."
INSECURE_EXAMPLES = {"sk-or-change-me", "change-me-the-secret-from-step-1", "test-admin-token", "__generate_me__"}
REFUSE_HOOK = "/__test/refuse/"
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
MAX_DISPLAY_NAME = 255
BOOL_STRINGS = {"0": False, "off": False, "f": False, "false": False, "n": False, "no": False,
                "1": True, "on": True, "t": True, "true": True, "y": True, "yes": True}


def hash_token(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token():
    return f"or-{secrets.token_hex(16)}"


def now_iso():
    return datetime.now(timezone.utc).isoformat()


def env_true(name):
    return os.getenv(name, "").strip().lower() == "true"


class HTTPError(Exception):
    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or []


class Conflict(Exception):
    pass


def norm_external_id(v):
    return (v.strip() or None) if isinstance(v, str) else None


def norm_email(v):
    return (v.strip().lower() or None) if isinstance(v, str) else None


# --- the users table --------------------------------------------------------------------------
class Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.users = {}  # id -> row (token_hash is the only trace of a token)
        self.by_hash = {}  # token sha256 -> id
        self.next_id = 1

    def _check_unique(self, external_user_id, email, exclude_id=None):
        for u in self.users.values():
            if u["id"] == exclude_id:
                continue
            if external_user_id is not None and u["external_user_id"] == external_user_id:
                raise Conflict("A user with this external_user_id already exists.")
            if email is not None and u["email"] == email:
                raise Conflict("A user with this email already exists.")

    def _set_token(self, row, plaintext):
        if row.get("token_hash"):
            self.by_hash.pop(row["token_hash"], None)
        h = hash_token(plaintext) if plaintext is not None else None
        if h is not None and h in self.by_hash and self.by_hash[h] != row["id"]:
            raise Conflict("token already in use")
        row["token_hash"] = h
        if h is not None:
            self.by_hash[h] = row["id"]

    def create(self, display_name, external_user_id, email, is_admin, file_quota, token="generate",
               file_count=0, user_id=None):
        """Inserts a user; returns (row copy, plaintext token or None)."""
        with self.lock:
            ext, mail = norm_external_id(external_user_id), norm_email(email)
            self._check_unique(ext, mail)
            uid = user_id if user_id is not None else self.next_id
            self.next_id = max(self.next_id, uid + 1)
            row = {"id": uid, "display_name": display_name, "external_user_id": ext, "email": mail,
                   "is_admin": bool(is_admin), "file_quota": file_quota, "file_count": file_count,
                   "created_at": now_iso(), "token_hash": None}
            plaintext = new_token() if token == "generate" else token
            self.users[uid] = row
            try:
                self._set_token(row, plaintext)
            except Conflict:
                del self.users[uid]
                raise
            return dict(row), plaintext

    def by_token(self, token):
        with self.lock:
            uid = self.by_hash.get(hash_token(token))
            return dict(self.users[uid]) if uid in self.users else None

    def get(self, uid):
        with self.lock:
            return dict(self.users[uid]) if uid in self.users else None

    def all(self):
        with self.lock:
            return [dict(self.users[k]) for k in sorted(self.users)]

    def update(self, uid, updates):
        with self.lock:
            row = self.users.get(uid)
            if row is None:
                return None
            ext = updates.get("external_user_id", row["external_user_id"])
            mail = updates.get("email", row["email"])
            self._check_unique(ext if "external_user_id" in updates else None,
                               mail if "email" in updates else None, exclude_id=uid)
            row.update(updates)
            return dict(row)

    def regenerate(self, uid):
        with self.lock:
            row = self.users.get(uid)
            if row is None:
                return None, None
            plaintext = new_token()
            self._set_token(row, plaintext)
            return dict(row), plaintext

    def delete(self, uid):
        with self.lock:
            row = self.users.pop(uid, None)
            if row and row["token_hash"]:
                self.by_hash.pop(row["token_hash"], None)
            return row is not None


# --- failed-auth rate limiter (per client IP, moving 60 s window) --------------------------------
class FailureLimiter:
    def __init__(self, limit):
        self.limit, self.lock, self.hits = limit, threading.Lock(), {}

    def exhausted(self, ip):
        """Returns the Retry-After seconds if the budget is used up, else None (consumes nothing)."""
        if self.limit <= 0:
            return None
        with self.lock:
            q = self.hits.get(ip)
            if not q:
                return None
            cutoff = time.monotonic() - 60
            while q and q[0] <= cutoff:
                q.popleft()
            if len(q) >= self.limit:
                return max(1, int(q[0] + 60 - time.monotonic() + 0.999))
            return None

    def hit(self, ip):
        if self.limit > 0:
            with self.lock:
                self.hits.setdefault(ip, deque()).append(time.monotonic())


class RequestLog:
    def __init__(self):
        self.lock, self.total, self.by_path, self.last = threading.Lock(), 0, {}, deque(maxlen=50)

    def record(self, entry):
        with self.lock:
            self.total += 1
            self.by_path[entry["path"]] = self.by_path.get(entry["path"], 0) + 1
            self.last.append(entry)

    def snapshot(self):
        with self.lock:
            return {"total": self.total, "by_path": dict(self.by_path), "last": list(self.last)}

    def reset(self):
        with self.lock:
            self.total, self.by_path = 0, {}
            self.last.clear()


def parse_cookie_header(value):
    """Starlette's cookie_parser: ';'-separated, later duplicates win."""
    out = {}
    for chunk in value.split(";"):
        key, val = chunk.split("=", 1) if "=" in chunk else ("", chunk)
        key, val = key.strip(), val.strip()
        if key or val:
            out[key] = http.cookies._unquote(val)
    return out


def cookie_names(values):
    names = []
    for value in values:
        for chunk in value.split(";"):
            name = chunk.split("=", 1)[0].strip() if "=" in chunk else ""
            if name:
                names.append(name)
    return names


# --- public shapes of a user (§6.1) -------------------------------------------------------------
def echo_user(u):
    return {k: u[k] for k in ("id", "display_name", "external_user_id", "email", "is_admin")}


def user_dict(u):  # GET /users/{id}, and request.state.user
    d = {k: u[k] for k in ("id", "display_name", "external_user_id", "email", "is_admin", "file_quota",
                           "file_count")}
    d["memberships"] = []
    return d


def list_item(u):
    return {k: u[k] for k in ("id", "display_name", "external_user_id", "email", "is_admin", "file_quota",
                              "file_count", "created_at")}


def created_dict(u, token):
    return {"id": u["id"], "display_name": u["display_name"], "external_user_id": u["external_user_id"],
            "email": u["email"], "token": token, "is_admin": u["is_admin"], "file_quota": u["file_quota"],
            "file_count": u["file_count"]}


def regenerated_dict(u, token):
    return {"id": u["id"], "display_name": u["display_name"], "external_user_id": u["external_user_id"],
            "token": token, "is_admin": u["is_admin"], "file_quota": u["file_quota"],
            "file_count": u["file_count"]}


def patched_dict(u):
    return {k: u[k] for k in ("id", "display_name", "external_user_id", "email", "is_admin", "created_at",
                              "file_quota", "file_count")}


# --- FastAPI/pydantic-like body validation --------------------------------------------------------
def v_err(kind, loc, msg, value):
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def coerce_field(name, value, errors):
    loc = ["body", name]
    if name in ("display_name", "external_user_id", "email"):
        if value is None or isinstance(value, str):
            return value
        errors.append(v_err("string_type", loc, "Input should be a valid string", value))
    elif name == "is_admin":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in BOOL_STRINGS:
            return BOOL_STRINGS[value.strip().lower()]
        if isinstance(value, (str, int, float)):
            errors.append(v_err("bool_parsing", loc, "Input should be a valid boolean, unable to interpret input",
                                value))
        else:
            errors.append(v_err("bool_type", loc, "Input should be a valid boolean", value))
    elif name == "file_quota":
        if value is None or isinstance(value, int):
            return None if value is None else int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and INT_RE.match(value):
            return int(value)
        if isinstance(value, (str, float)):
            errors.append(v_err("int_parsing", loc,
                                "Input should be a valid integer, unable to parse string as an integer", value))
        else:
            errors.append(v_err("int_type", loc, "Input should be a valid integer", value))
    return None


USER_FIELDS = ("display_name", "external_user_id", "email", "is_admin", "file_quota")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""

    def log_message(self, *args):  # quiet
        pass

    # Idle keep-alive connections are closed after the configured timeout, like uvicorn's.
    def handle_one_request(self):
        ka = self.server.cfg.keep_alive_timeout
        self.connection.settimeout(ka if ka > 0 else None)
        super().handle_one_request()

    def __getattr__(self, name):  # every method goes through _dispatch
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    # --- I/O ------------------------------------------------------------------------------------
    def read_body(self):
        total, digest, head = 0, hashlib.sha256(), bytearray()

        def take(chunk):
            nonlocal total
            total += len(chunk)
            digest.update(chunk)
            if len(head) < (1 << 20):
                head.extend(chunk[: (1 << 20) - len(head)])

        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("truncated chunked body")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = size
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        raise ConnectionError("truncated chunk")
                    remaining -= len(chunk)
                    take(chunk)
                self.rfile.readline(65537)
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    raise ConnectionError("truncated body")
                remaining -= len(chunk)
                take(chunk)
        return total, digest.hexdigest(), bytes(head)

    def send(self, status, body=None, headers=()):
        data = b""
        if body is not None:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("X-Request-ID", self.request_id)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(data)
        self.wfile.flush()

    # --- helpers ----------------------------------------------------------------------------------
    def header(self, name):
        """First value of a header, surrounding whitespace removed (Starlette/h11 semantics)."""
        v = self.headers.get(name)
        return v.strip(" \t") if v is not None else None

    def client_ip(self):
        peer = self.client_address[0]
        trusted = self.server.cfg.trusted_proxies
        xff = self.headers.get("X-Forwarded-For")
        if xff and ("*" in trusted or peer in trusted):
            hosts = [h.strip() for h in xff.split(",") if h.strip()]
            for h in reversed(hosts):
                if "*" not in trusted and h not in trusted:
                    return h
            if hosts:
                return hosts[0]
        return peer

    def scheme(self):
        peer = self.client_address[0]
        trusted = self.server.cfg.trusted_proxies
        proto = self.headers.get("X-Forwarded-Proto")
        if proto and ("*" in trusted or peer in trusted):
            p = proto.split(",")[0].strip().lower()
            if p in ("http", "https"):
                return p
        return "http"

    def error_body(self, code, message):  # OpenRAGError shape
        return {"detail": f"[{code}]: {message}", "extra": {"request_id": self.request_id}}

    def not_found(self, uid):
        raise HTTPError(404, self.error_body("USER_NOT_FOUND", f"User with ID {uid} does not exist."))

    def conflict(self, message):
        if self.server.cfg.conflict_status == 500:
            raise HTTPError(500, {"detail": "[UNEXPECTED_ERROR]: An unexpected error occurred",
                                  "extra": {"request_id": self.request_id}})
        raise HTTPError(409, {"detail": message})

    # --- dispatch ---------------------------------------------------------------------------------
    def _dispatch(self):
        self.connection.settimeout(None)
        self.request_id = self.header("X-Request-ID") or f"req_{uuid.uuid4().hex}"
        parts = urlsplit(self.path)
        raw_path = parts.path or "/"
        if not raw_path.startswith("/"):
            raw_path = "/" + raw_path
        path = unquote(raw_path)  # the routed path (scope["path"])
        try:
            body_len, body_sha, body_head = self.read_body()
        except (ValueError, ConnectionError):
            self.close_connection = True
            return self.send(400, {"detail": "Invalid HTTP request body"})
        ctx = {"raw_path": raw_path, "path": path, "query": parts.query, "body_len": body_len,
               "body_sha": body_sha, "body": body_head}
        cfg = self.server.cfg
        if cfg.test_hooks and path.startswith("/__test/") and not path.startswith(REFUSE_HOOK):
            return self.test_hook(path)
        entry = {"method": self.command, "path": path, "status": None, "auth_via": None, "user_id": None}
        try:
            status, body, headers = self.route(ctx, entry)
        except HTTPError as e:
            status, body, headers = e.status, e.body, e.headers
        except Exception:  # noqa: BLE001 -- the generic 500 handler
            traceback.print_exc(file=sys.stderr)
            status, body, headers = 500, {"detail": "[UNEXPECTED_ERROR]: An unexpected error occurred",
                                          "extra": {"request_id": self.request_id}}, []
        entry["status"] = status
        self.server.log.record(entry)
        self.send(status, body, headers)

    def test_hook(self, path):
        if path == "/__test/users" and self.command in ("GET", "HEAD"):
            users = []
            for u in self.server.store.all():
                d = list_item(u)
                d["token_sha256"] = u["token_hash"]
                users.append(d)
            return self.send(200, {"users": users})
        if path == "/__test/requests" and self.command in ("GET", "HEAD"):
            return self.send(200, self.server.log.snapshot())
        if path == "/__test/requests" and self.command == "DELETE":
            self.server.log.reset()
            return self.send(204)
        return self.send(404, {"detail": "Not Found"})

    def authenticate(self, path, query):
        """The token-mode AuthMiddleware (§5.2). Returns (user row, via, cookie name) or raises."""
        cfg, store = self.server.cfg, self.server.store
        chainlit = path == "/chainlit" or path.startswith("/chainlit/")
        ip = self.client_ip()
        if not chainlit:
            retry = self.server.limiter.exhausted(ip)
            if retry is not None:
                raise HTTPError(429, {"detail": "Rate limit exceeded. Please retry later.", "extra": {}},
                                [("Retry-After", str(retry))])
        candidates = []
        if path.startswith("/static"):
            tok = parse_qs(query).get("token", [None])[0] if "token=" in query.lower() else None
            if tok is not None:
                candidates.append(("query", None, tok))
        else:
            if chainlit:  # Chainlit's header-auth: session cookie first, then the hand-off cookie
                cookies = parse_cookie_header(self.header("Cookie") or "")
                for name in ("openrag_session", "openrag_chainlit_token"):
                    if cookies.get(name):
                        candidates.append(("cookie", name, cookies[name]))
            auth = self.header("Authorization") or ""
            if auth.lower().startswith("bearer "):
                candidates.append(("bearer", None, auth.split(" ", 1)[1]))
        if not candidates:
            if not chainlit:
                self.server.limiter.hit(ip)
            raise HTTPError(403, {"detail": "Missing token"})
        for via, cookie, tok in candidates:
            user = store.by_token(tok)
            if user is not None:
                return user, via, cookie, tok
        if not chainlit:
            self.server.limiter.hit(ip)
        raise HTTPError(403, {"detail": "Invalid token"})

    def route(self, ctx, entry):
        path, method = ctx["path"], self.command
        get_like = method in ("GET", "HEAD")
        public = path in BYPASS_PATHS or path.startswith("/assets/")
        if public:
            if path in AUTH_FLOW_ROUTES:
                allowed = AUTH_FLOW_ROUTES[path]
                if not (method == allowed or (allowed == "GET" and method == "HEAD")):
                    return self.method_not_allowed([allowed] + (["HEAD"] if allowed == "GET" else []))
                return 400, {"detail": AUTH_MODE_GATE}, []
            body = self.echo(ctx, None, None, None, public=True)
            if path == "/auth/chainlit-logout-signal":
                body["logged_out"] = "openrag_chainlit_logout" in cookie_names(self.headers.get_all("Cookie") or [])
            return 200, body, []
        user, via, cookie, token = self.authenticate(path, ctx["query"])
        entry["auth_via"], entry["user_id"] = via, user["id"]

        if path == "/auth/me":
            if not get_like:
                return self.method_not_allowed(["GET", "HEAD"])
            return 200, {"user_id": user["id"], "email": user["email"], "auth_method": "token",
                         "session_expires_at": None}, []
        if path == "/auth/chainlit-session":
            secure = "; Secure" if (self.scheme() == "https" or
                                    os.getenv("PREFERRED_URL_SCHEME", "").lower() == "https") else ""
            if method == "POST":
                return 204, None, [("Set-Cookie", f"openrag_chainlit_token={token}; HttpOnly; Max-Age=120; "
                                                  f"Path=/chainlit; SameSite=lax{secure}")]
            if method == "DELETE":
                return 204, None, [("Set-Cookie", 'openrag_chainlit_token=""; expires=Thu, 01 Jan 1970 '
                                                  '00:00:00 GMT; Max-Age=0; Path=/chainlit; SameSite=lax')]
            return self.method_not_allowed(["POST", "DELETE"])
        if path == "/users" or path.startswith("/users/"):
            return self.users_api(ctx, user)
        if path == "/static":  # the StaticFiles mount matches /static/...: redirect_slashes answers
            return 307, None, [("Location", self.slash_redirect(ctx))]
        if self.server.cfg.test_hooks and path.startswith(REFUSE_HOOK):
            return self.refuse(path[len(REFUSE_HOOK):], ctx["query"])
        return 200, self.echo(ctx, user, via, cookie), []

    def refuse(self, code, query):
        """GET /__test/refuse/<code>?detail=D, after a successful authentication (--test-hooks)."""
        if self.command not in ("GET", "HEAD"):
            return self.method_not_allowed(["GET", "HEAD"])
        if not (code.isdigit() and 400 <= int(code) <= 599):
            return 404, {"detail": "Not Found"}, []
        return int(code), {"detail": parse_qs(query).get("detail", ["Refused"])[0]}, []

    def slash_redirect(self, ctx):
        """Starlette's redirect_slashes target: the same URL (query kept) with the trailing slash toggled."""
        raw = ctx["raw_path"]
        raw = raw[:-1] if raw.endswith("/") else raw + "/"
        host = self.header("Host") or f"127.0.0.1:{self.server.server_address[1]}"
        return f"{self.scheme()}://{host}{raw}" + (f"?{ctx['query']}" if ctx["query"] else "")

    def method_not_allowed(self, allowed):
        return 405, {"detail": "Method Not Allowed"}, [("Allow", ", ".join(allowed))]

    def echo(self, ctx, user, via, cookie, public=False):
        headers = {}
        for k, v in self.headers.items():
            headers.setdefault(k.lower(), []).append(v)
        if getattr(self.server.cfg, "hide_tokens", False):
            # The demo shows that a token was injected, never the token itself.
            hidden = "<the user's OpenRag token, injected by the sidecar (hidden)>"
            if "authorization" in headers:
                headers["authorization"] = [f"Bearer {hidden}"]
            if "cookie" in headers:
                headers["cookie"] = [re.sub(r"(openrag_chainlit_token=)[^;]*", r"\1" + hidden, c)
                                     for c in headers["cookie"]]
            ctx = dict(ctx, query=re.sub(r"(^|&)token=[^&]*", r"\1token=(hidden)", ctx["query"]))
        return {
            "path": ctx["path"], "raw_path": ctx["raw_path"], "method": self.command, "query": ctx["query"],
            "user": echo_user(user) if user else None, "auth_via": via, "auth_cookie": cookie,
            "headers": headers, "cookies": cookie_names(self.headers.get_all("Cookie") or []),
            "body_length": ctx["body_len"], "body_sha256": ctx["body_sha"],
            "body": ctx["body"][:4096].decode("utf-8", "replace"), "client_ip": self.client_ip(),
            "public": public,
        }

    # --- /users (§6.1) ------------------------------------------------------------------------------
    USER_ROUTES = [
        ("GET", re.compile(r"^/users/$"), "list_users"),
        ("GET", re.compile(r"^/users/info$"), "user_info"),
        ("POST", re.compile(r"^/users/$"), "create_user"),
        ("GET", re.compile(r"^/users/(?P<uid>[^/]+)$"), "get_user"),
        ("DELETE", re.compile(r"^/users/(?P<uid>[^/]+)$"), "delete_user"),
        ("POST", re.compile(r"^/users/(?P<uid>[^/]+)/regenerate_token$"), "regenerate_token"),
        ("PATCH", re.compile(r"^/users/(?P<uid>[^/]+)$"), "patch_user"),
    ]

    def users_api(self, ctx, user):
        path, method = ctx["path"], self.command
        allowed = []
        for m, rx, name in self.USER_ROUTES:
            match = rx.match(path)
            if not match:
                continue
            if m == method or (m == "GET" and method == "HEAD"):
                return getattr(self, name)(ctx, user, match.groupdict().get("uid"))
            allowed += [m] + (["HEAD"] if m == "GET" else [])
        if allowed:
            return self.method_not_allowed(sorted(set(allowed)))
        # Starlette's redirect_slashes: 307 to the same URL with the trailing slash toggled.
        other = path[:-1] if path.endswith("/") else path + "/"
        if any(rx.match(other) for _, rx, _ in self.USER_ROUTES):
            return 307, None, [("Location", self.slash_redirect(ctx))]
        return 404, {"detail": "Not Found"}, []

    def require_admin(self, user):
        if not user.get("is_admin"):
            raise HTTPError(403, {"detail": "Admin privileges required"})

    @staticmethod
    def parse_id(raw, errors):
        if raw is not None and INT_RE.match(raw):
            return int(raw)
        errors.append(v_err("int_parsing", ["path", "user_id"],
                            "Input should be a valid integer, unable to parse string as an integer", raw))
        return None

    def parse_body(self, ctx, errors):
        """A pydantic UserCreate/UserUpdate body: returns {field: value} for the fields that were set."""
        raw = ctx["body"]
        if ctx["body_len"] == 0:
            errors.append(v_err("missing", ["body"], "Field required", None))
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            errors.append({"type": "json_invalid", "loc": ["body", getattr(e, "pos", 0)],
                           "msg": "JSON decode error", "input": {}, "ctx": {"error": getattr(e, "msg", str(e))}})
            return {}
        if not isinstance(data, dict):
            errors.append(v_err("model_attributes_type", ["body"],
                                "Input should be a valid dictionary or object to extract fields from", data))
            return {}
        out = {}
        for name in USER_FIELDS:  # extra keys (token, id, file_count, ...) are accepted and ignored
            if name in data:
                n = len(errors)
                value = coerce_field(name, data[name], errors)
                if len(errors) == n:
                    out[name] = value
        return out

    def validate_profile(self, display_name, email):
        if isinstance(display_name, str) and len(display_name) > MAX_DISPLAY_NAME:
            raise HTTPError(400, self.error_body("VALIDATION_ERROR",
                                                 f"display_name exceeds {MAX_DISPLAY_NAME} characters."))
        if isinstance(email, str) and email.strip() and not EMAIL_RE.match(email.strip()):
            raise HTTPError(400, self.error_body("VALIDATION_ERROR", f"Invalid email address: {email!r}"))

    @staticmethod
    def raise_422(errors):
        if errors:
            raise HTTPError(422, {"detail": errors})

    def list_users(self, ctx, user, _uid):
        self.require_admin(user)
        users = [list_item(u) for u in self.server.store.all()]
        if self.server.cfg.generation == "1.1.8":  # its users list has no email
            for u in users:
                u.pop("email", None)
        return 200, {"users": users}, []

    def user_info(self, ctx, user, _uid):
        cfg = self.server.cfg
        if user["is_admin"] or cfg.default_file_quota < 0:
            quota = -1
        else:
            quota = user["file_quota"]
            if quota is None:
                quota = cfg.default_file_quota
            elif quota < 0:
                quota = -1
        info = user_dict(user)
        info.update({"file_count": user["file_count"], "pending_files": 0, "total_files": user["file_count"],
                     "file_quota": quota, "chainlit_enabled": cfg.chainlit_enabled})
        return 200, info, []

    def create_user(self, ctx, user, _uid):
        self.require_admin(user)
        errors = []
        fields = self.parse_body(ctx, errors)
        self.raise_422(errors)
        self.validate_profile(fields.get("display_name"), fields.get("email"))
        # OpenRag's UserCreate model defaults file_quota to 10 when the field is absent; an
        # explicit null stores NULL (the backend's DEFAULT_FILE_QUOTA then applies).
        quota = fields["file_quota"] if "file_quota" in fields else 10
        try:
            row, token = self.server.store.create(fields.get("display_name"), fields.get("external_user_id"),
                                                  fields.get("email"), fields.get("is_admin", False), quota)
        except Conflict as e:
            self.conflict(str(e))
        return 201, created_dict(row, token), []

    def get_user(self, ctx, user, uid):
        self.require_admin(user)
        errors = []
        uid = self.parse_id(uid, errors)
        self.raise_422(errors)
        row = self.server.store.get(uid)
        if row is None:
            self.not_found(uid)
        return 200, user_dict(row), []

    def delete_user(self, ctx, user, uid):
        self.require_admin(user)
        errors = []
        uid = self.parse_id(uid, errors)
        self.raise_422(errors)
        if uid == 1:
            raise HTTPError(400, {"detail": "Cannot delete default admin user."})
        if not self.server.store.delete(uid):
            self.not_found(uid)
        return 204, None, []

    def regenerate_token(self, ctx, user, uid):
        target = int(uid) if uid is not None and INT_RE.match(uid) else None
        checked = self.server.cfg.generation != "1.1.8"  # OpenRag 1.1.8 checks nothing here
        if checked and not user.get("is_admin") and not (target is not None and target == user["id"]):
            raise HTTPError(403, {"detail": "Admin privileges or self-access required"})
        errors = []
        uid = self.parse_id(uid, errors)
        self.raise_422(errors)
        row, token = self.server.store.regenerate(uid)
        if row is None:
            self.not_found(uid)
        return 200, regenerated_dict(row, token), []

    def patch_user(self, ctx, user, uid):
        self.require_admin(user)
        errors = []
        uid = self.parse_id(uid, errors)
        fields = self.parse_body(ctx, errors)
        self.raise_422(errors)
        if uid == 1 and fields.get("is_admin", True) is False:
            raise HTTPError(400, {"detail": "Cannot revoke admin privileges from the default admin user."})
        if self.server.store.get(uid) is None:
            self.not_found(uid)
        self.validate_profile(fields.get("display_name"), fields.get("email"))
        if "external_user_id" in fields:
            fields["external_user_id"] = norm_external_id(fields["external_user_id"])
        if "email" in fields:
            fields["email"] = norm_email(fields["email"])
        try:
            row = self.server.store.update(uid, fields)
        except Conflict as e:
            self.conflict(str(e))
        if row is None:
            self.not_found(uid)
        return 200, patched_dict(row), []


class Config:
    pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def fail(msg):
    print(f"openrag_backend: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def load_seed(store, path):
    try:
        with open(path, encoding="utf-8") as f:
            seed = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read --users-file {path}: {e}")
    if not isinstance(seed, list):
        fail("--users-file must hold a JSON list of user objects")
    for i, entry in enumerate(seed):
        if not isinstance(entry, dict):
            fail(f"--users-file entry {i} is not an object")
        token = entry.get("token")
        if token is not None and (not isinstance(token, str) or not token):
            fail(f"--users-file entry {i}: token must be a non-empty string or null")
        try:
            store.create(entry.get("display_name"), entry.get("external_user_id"), entry.get("email"),
                         bool(entry.get("is_admin", False)), entry.get("file_quota"), token=token,
                         file_count=int(entry.get("file_count", 0)))
        except Conflict as e:
            fail(f"--users-file entry {i}: {e}")


def main():
    ap = argparse.ArgumentParser(description="OpenRag backend stand-in (AUTH_MODE=token)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--users-file")
    ap.add_argument("--test-hooks", action="store_true")
    ap.add_argument("--auth-failure-limit", type=int, default=0)
    ap.add_argument("--conflict-status", type=int, choices=(409, 500), default=409)
    ap.add_argument("--keep-alive-timeout", type=float, default=5.0)
    ap.add_argument("--hide-tokens", action="store_true",
                    help="echo that a token came, not the token (for the demo's pages)")
    ap.add_argument("--generation", choices=("1.1.8", "later"), default="later",
                    help="1.1.8: POST /users/{id}/regenerate_token has no permission check")
    args = ap.parse_args()

    mode = os.getenv("AUTH_MODE", "token").strip().lower()
    if mode == "oidc":
        fail("this stand-in only implements AUTH_MODE=token")
    if mode != "token":
        fail(f"Invalid AUTH_MODE='{os.getenv('AUTH_MODE')}'. Expected 'token' or 'oidc'.")
    auth_token = os.getenv("AUTH_TOKEN")
    if not auth_token:
        fail("AUTH_TOKEN is required (the stand-in has no ALLOW_NO_AUTH dev bypass)")
    if (len(auth_token) < 12 or auth_token in INSECURE_EXAMPLES) and not env_true("ALLOW_INSECURE_SECRETS"):
        fail("Refusing to start with insecure configuration. AUTH_TOKEN is a published example value or "
             "shorter than 12 characters. Set ALLOW_INSECURE_SECRETS=true to override (code "
             "INSECURE_SECRET_CONFIGURATION).")

    cfg = Config()
    cfg.test_hooks = args.test_hooks
    cfg.conflict_status = args.conflict_status
    cfg.keep_alive_timeout = args.keep_alive_timeout
    cfg.generation = args.generation
    cfg.hide_tokens = args.hide_tokens
    try:
        cfg.default_file_quota = int(os.getenv("DEFAULT_FILE_QUOTA", "-1"))
    except ValueError:
        fail("DEFAULT_FILE_QUOTA must be an integer")
    cfg.chainlit_enabled = os.getenv("WITH_CHAINLIT_UI", "true").strip().lower() == "true"
    cfg.trusted_proxies = {h.strip() for h in os.getenv("UVICORN_FORWARDED_ALLOW_IPS", "127.0.0.1").split(",")
                           if h.strip()}

    store = Store()
    store.create("Admin", None, None, True, None, token=auth_token, user_id=1)  # ensure_admin_user
    if args.users_file:
        load_seed(store, args.users_file)

    server = Server(("127.0.0.1", args.port), Handler)
    server.cfg, server.store = cfg, store
    server.limiter, server.log = FailureLimiter(args.auth_failure_limit), RequestLog()
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
