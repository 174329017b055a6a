#!/usr/bin/env python3
"""A stand-in for the OpenRag backend in AUTH_MODE=token: what sso-sidecar fronts (stdlib only).

Usage:
    AUTH_TOKEN=<admin token, >= 12 chars> python3 tests/support/openrag_backend.py \
        [--port 0] [--users-file FILE] [--partitions a,b,c] [--test-hooks] \
        [--generation 1.1.8|later] [--super-admin-mode true|false] [--conflict-status 409|500] \
        [--auth-failure-limit N] [--keep-alive-timeout 5] [--app-version V] [--hide-tokens]

Endpoints and flags at a glance (details below; "1.1.8" = --generation 1.1.8, the real OpenRag
verified in issue 16: IA-Generative/openrag d6fd8e7f; "later" = later linagora versions, the default):
  users     GET /users/  POST /users/ (JSON)  GET /users/info  GET|PATCH|DELETE /users/{id}
            POST /users/{id}/regenerate_token      GET /auth/me   POST|DELETE /auth/chainlit-session (later)
  partition GET /partition/  POST|GET|DELETE /partition/{p}  GET|POST /partition/{p}/users (FORM user_id, role)
            PATCH|DELETE /partition/{p}/users/{user_id} (PATCH: FORM role)
  public    /health_check /version /docs /openapi.json /redoc, the /auth flow routes (400); later also
            /ready /metrics /auth/chainlit-logout-signal /assets/*; 1.1.8 also /chainlit* (its own auth)
  echo      any other path, once authenticated (a JSON echo of what arrived)
  hooks     (--test-hooks) GET /__test/dump  GET /__test/users  GET|DELETE /__test/requests
            POST /__test/partition/{p}  GET /__test/refuse/<code>?detail=D  POST /__test/chainlit/forget
            POST /__test/slow-list?ms=N[&fail=1]  POST /__test/slow-create?ms=N
            POST /__test/fail-get-user?n=N  POST|GET /__test/slow-patch?ms=N
            POST /__test/fail-handoff?n=N  POST /__test/slow-handoff?ms=N
            POST /__test/broken-create?on=1|0
  flags     --users-file (users, their memberships)  --partitions (created at start, no members)
            --generation  --super-admin-mode (default true)  --conflict-status (default by generation)

Binds 127.0.0.1 (port 0 = a free one) and prints exactly "READY <port>" on stdout; nothing else is
ever written to stdout (errors go to stderr). HTTP/1.1 with keep-alive; an idle connection is closed
after --keep-alive-timeout seconds (5, uvicorn's default; 0 = never).

Reproduces /work/shared/reference/openrag-auth-behaviour.md §5 and §6 (token mode only), and the shapes
the real backend showed (issue 16 item 7):
  * AUTH_TOKEN bootstraps user 1 ("Admin", is_admin). --users-file seeds more users from a JSON list of
    {"display_name", "external_user_id", "email", "is_admin", "token", "file_quota", "memberships"}:
    "token" is in clear in the file (null/absent = no token, like an auto-provisioned user); only its
    SHA-256 is kept. "memberships" is [{"partition": P, "role": viewer|editor|owner}] or {P: role}; a
    partition named there is created. --partitions a,b,c creates partitions with no members.
  * Auth: "Authorization: Bearer <token>" (case-insensitive "bearer " prefix, the rest taken verbatim);
    paths starting with /static take the token from the first "token" query parameter ONLY (a bearer
    there gets 403 Missing token). Missing -> 403 {"detail":"Missing token"}, unknown -> 403
    {"detail":"Invalid token"}. The four /auth flow routes answer 400 (AUTH_MODE is not 'oidc').
    Public paths: /health_check /version /docs /openapi.json /redoc and the /auth flow routes; later
    versions also /ready /metrics /auth/chainlit-logout-signal /assets/*.
  * Chainlit. later: /chainlit and /chainlit/* go through the middleware, which takes the
    openrag_session, then the openrag_chainlit_token cookie (the hand-off), then a bearer; POST/DELETE
    /auth/chainlit-session set/clear that cookie. 1.1.8: every path starting with /chainlit bypasses the
    middleware and is Chainlit's own: POST /chainlit/login (FORM username, password = an OpenRag token)
    -> 200 {"success":true} + Set-Cookie access_token=<Chainlit session>, or 401
    {"detail":"credentialssignin"}; GET /chainlit/user, /chainlit/feedback and /chainlit/project/* (not
    /translations) need that session (access_token cookie, or a bearer holding it), else 401
    {"detail":"Invalid authentication token"} (an OpenRag token as bearer gets that too); the OpenRag
    cookies mean nothing. /auth/chainlit-session and /auth/chainlit-logout-signal do not exist (404
    once authenticated).
  * Users (§6.1). POST /users/ (admin, JSON) -> 201 {id, display_name, external_user_id, email, token,
    is_admin, file_quota, file_count}; file_quota absent -> 10 (the request model's default).
    regenerate_token -> 200 {id, display_name, external_user_id, token, is_admin, file_quota,
    file_count}. GET /users/{id} -> {id, display_name, external_user_id, email, is_admin, file_quota,
    file_count, memberships:[{partition, role, added_at}]}; /users/info the same for the caller plus
    pending_files, total_files, the effective file_quota (-1 = unlimited) and chainlit_enabled.
    Unknown user -> 404 {"detail":"[USER_NOT_FOUND]: User with ID N does not exist.","extra":{}}.
    A duplicate email or external_user_id -> --conflict-status: 409 {"detail": ...}, or 500
    {"detail":"[UNEXPECTED_ERROR]: An unexpected error occurred","extra":{}}, the POST then using up a
    user id (a Postgres sequence does).
  * Partitions (routers/partition.py). POST /partition/{p}: any user; 201 empty, the caller becomes its
    owner; 409 {"detail":"Partition 'p' already exists."}. GET /partition/{p}/users -> {"members":
    [{user_id, role, added_at}]}; POST /partition/{p}/users (FORM user_id, role=viewer) -> 201 empty;
    PATCH /partition/{p}/users/{user_id} (FORM role) -> 200 empty; DELETE -> 204. These need the
    partition's owner role (403 {"detail":"Access to partition 'p' forbidden"} for a non-member of an
    existing partition, {"detail":"Owner role required for partition 'p'"} for a lower role); with
    SUPER_ADMIN_MODE (--super-admin-mode true, the default here) an admin passes every role check,
    with false the admin token is an ordinary user (refused unless it owns the partition, e.g. created
    it). Role checks come first, then FastAPI's 422 (form/path), then: unknown partition -> 404
    [PARTITION_NOT_FOUND], unknown user -> 404 [USER_NOT_FOUND], not a member (PATCH/DELETE) -> 404
    [MEMBERSHIP_NOT_FOUND]; an existing member on POST -> 409 [PARTITION_MEMBER_EXISTS]. Role is one
    of viewer|editor|owner exactly (422 literal_error otherwise). A JSON body is no form (422 missing).
    Deleting a user deletes the partitions it owns. GET /partition/ lists partitions (all for an admin
    with SUPER_ADMIN_MODE, else the caller's with its role); GET /partition/{p} -> {"files": []}.
  * --generation 1.1.8 (everything else as above):
      - GET /users/ has no email; GET /users/{id}, /users/info have memberships but no email, and
        /users/info no chainlit_enabled; /auth/me's email is null; PATCH /users/{id} answers
        {display_name, external_user_id, email: null, is_admin, file_quota, id, created_at, file_count}
        and stores what it is sent (no trimming, no lower-casing, no 400 validation); POST /users/
        lower-cases the email only, an explicit "file_quota": null stores DEFAULT_FILE_QUOTA when > 0.
      - not-found errors are the Ray actor's: 404 {"detail":"[VDB_USER_NOT_FOUND]: User with ID N does
        not exist.","extra":{"collection_name":"vdb_test","user_id":N}}, [VDB_PARTITION_NOT_FOUND]
        (extra collection_name, partition), [VDB_MEMBERSHIP_NOT_FOUND] (collection_name, user_id,
        partition).
      - a duplicate email/external_user_id is the unhandled 500 (unless --conflict-status 409).
      - regenerate_token has no permission check (later: admin or self, else 403 "Admin privileges or
        self-access required").
      - POST /partition/{p}/users for an existing member updates its role (201); later answers 409.
      - Chainlit as described above; /metrics needs an admin; /ready, /assets/* need a token.
      - GET /version -> {"version":"1.1.8"} (later: "1.1.13"; --app-version overrides).
  * /static itself (no trailing slash), once authenticated, answers what Starlette's redirect_slashes
    answers for OpenRag's StaticFiles mount: 307, Location <scheme>://<Host>/static/?<query>, the query
    kept as sent (so with the token parameter in it). /users and /partition paths with the trailing
    slash toggled get the same 307 when that finds a route; a route with another method -> 405.
  * Every other path (authenticated, or public) answers 200 with a JSON echo: path, raw_path, method,
    query, user, auth_via ("bearer" | "query" | "cookie" | "chainlit" | null), auth_cookie, headers
    (lower-cased name -> [values]), cookies (cookie NAMES, in order, duplicates kept), body_length,
    body_sha256, body (first 4 KiB), client_ip, public.
  * --test-hooks adds (no auth; not OpenRag): GET /__test/dump (the whole database, for byte-for-byte
    before/after comparisons: {"users":[{id, display_name, external_user_id, email, is_admin,
    file_quota, file_count, created_at, token_sha256}] by id, "partitions":[{partition, created_at}] by
    name, "memberships":[{partition, user_id, role, added_at}] by partition then user_id,
    "next_user_id"}), GET /__test/users (every user with token_sha256), POST /__test/partition/{p}
    (create a partition with no members: 201, or 409 if it exists), GET /__test/requests (total,
    by_path counts, the last 50 {method, path, status, auth_via, user_id}), DELETE /__test/requests
    (reset the log), POST /__test/slow-list?ms=N[&fail=1] (GET /users/ answers N ms late from then
    on, as a long list would; with fail=1, then 503), POST /__test/slow-create?ms=N (POST /users/
    answers N ms after storing the user, who is visible to other requests meanwhile), POST
    /__test/broken-create?on=1 (POST /users/ stores the user, then answers 201 with its JSON cut
    short: a commit whose answer is lost; on=0 ends it). And one AUTHENTICATED hook (the token is checked and the request logged as on any
    route): GET /__test/refuse/<code>?detail=D answers <code> {"detail": D}, a route refusing a valid
    user for its own reasons (Chainlit's 401 "Invalid authentication token", a 403 "Invalid token"
    relayed from a provider). Without --test-hooks these paths are echoed.
  * --auth-failure-limit N (default 0 = off) emulates RATE_LIMIT_AUTH_FAILURE (later versions): after
    N failed authentications in 60 s from one client IP, every non-public request from it gets 429.
Env: AUTH_TOKEN (required), AUTH_MODE (must be token if set), ALLOW_INSECURE_SECRETS,
DEFAULT_FILE_QUOTA (-1), WITH_CHAINLIT_UI (true), PREFERRED_URL_SCHEME, UVICORN_FORWARDED_ALLOW_IPS,
VDB_COLLECTION_NAME (vdb_test; in 1.1.8's error extras).
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
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

BYPASS_PATHS = {
    "/docs", "/openapi.json", "/redoc", "/health_check", "/ready", "/version",
    "/auth/login", "/auth/callback", "/auth/backchannel-logout", "/auth/logout",
    "/auth/chainlit-logout-signal", "/metrics",
}
BYPASS_PATHS_118 = {  # OpenRag 1.1.8's _BYPASS_PATHS; and every path starting with /chainlit
    "/docs", "/openapi.json", "/redoc", "/health_check", "/version",
    "/auth/login", "/auth/callback", "/auth/backchannel-logout", "/auth/logout",
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
UNEXPECTED = {"detail": "[UNEXPECTED_ERROR]: An unexpected error occurred", "extra": {}}  # api.py's handler
BOOL_STRINGS = {"0": False, "off": False, "f": False, "false": False, "n": False, "no": False,
                "1": True, "on": True, "t": True, "true": True, "y": True, "yes": True}


class Raw(bytes):
    """A response body sent as it is, not as JSON (--test-hooks: an answer cut short)."""


def hash_token(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token():
    return f"or-{secrets.token_hex(16)}"


def now_iso():
    """A naive local timestamp, as OpenRag's `DateTime, default=datetime.now` columns give."""
    return datetime.now().isoformat()


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


ROLES = {"viewer": 1, "editor": 2, "owner": 3}  # OpenRag's ROLE_HIERARCHY


# --- the users, partitions and partition_memberships tables ------------------------------------
class Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.users = {}  # id -> row (token_hash is the only trace of a token)
        self.by_hash = {}  # token sha256 -> id
        self.next_id = 1
        self.partitions = {}  # name -> {"partition", "created_at"}, in creation order
        self.members = {}  # (partition, user_id) -> {"role", "added_at"}, in insertion order

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
               file_count=0, user_id=None, consume_id_on_conflict=False):
        """Inserts a user (values stored as given); returns (row copy, plaintext token or None).

        consume_id_on_conflict: a refused insert still uses up an id, as a Postgres sequence does
        when the INSERT fails on a unique constraint."""
        with self.lock:
            try:
                self._check_unique(external_user_id, email)
            except Conflict:
                if consume_id_on_conflict and user_id is None:
                    self.next_id += 1
                raise
            uid = user_id if user_id is not None else self.next_id
            self.next_id = max(self.next_id, uid + 1)
            row = {"id": uid, "display_name": display_name, "external_user_id": external_user_id,
                   "email": email, "is_admin": bool(is_admin), "file_quota": file_quota,
                   "file_count": file_count, "created_at": now_iso(), "token_hash": None}
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
        """OpenRag's delete_user: every partition the user owns goes first (with all its
        memberships), then the user (its memberships cascade)."""
        with self.lock:
            row = self.users.pop(uid, None)
            if row is None:
                return False
            owned = [p for (p, u), m in self.members.items() if u == uid and m["role"] == "owner"]
            for p in owned:
                self._drop_partition(p)
            for key in [k for k in self.members if k[1] == uid]:
                del self.members[key]
            if row["token_hash"]:
                self.by_hash.pop(row["token_hash"], None)
            return True

    # partitions and memberships
    def partition_exists(self, name):
        with self.lock:
            return name in self.partitions

    def create_partition(self, name, owner_id=None):
        """False if it exists already. With owner_id, that user becomes its owner (POST /partition/{p})."""
        with self.lock:
            if name in self.partitions:
                return False
            self.partitions[name] = {"partition": name, "created_at": now_iso()}
            if owner_id is not None:
                self.members[(name, owner_id)] = {"role": "owner", "added_at": now_iso()}
            return True

    def _drop_partition(self, name):
        self.partitions.pop(name, None)
        for key in [k for k in self.members if k[0] == name]:
            del self.members[key]

    def delete_partition(self, name):
        with self.lock:
            if name not in self.partitions:
                return False
            self._drop_partition(name)
            return True

    def list_partitions(self):
        with self.lock:
            return [dict(p) for p in self.partitions.values()]

    def membership(self, name, uid):
        with self.lock:
            m = self.members.get((name, uid))
            return dict(m) if m else None

    def members_of(self, name):  # list_partition_members
        with self.lock:
            return [{"user_id": u, "role": m["role"], "added_at": m["added_at"]}
                    for (p, u), m in self.members.items() if p == name]

    def memberships_of(self, uid):  # user.memberships
        with self.lock:
            return [{"partition": p, "role": m["role"], "added_at": m["added_at"]}
                    for (p, u), m in self.members.items() if u == uid]

    def partitions_of(self, uid):  # list_user_partitions: Partition.to_dict() + role
        with self.lock:
            return [dict(self.partitions[p], role=m["role"])
                    for (p, u), m in self.members.items() if u == uid and p in self.partitions]

    def add_member(self, name, uid, role, upsert):
        """True if added; an existing member gets the role when upsert (OpenRag 1.1.8), else False."""
        with self.lock:
            m = self.members.get((name, uid))
            if m is not None:
                if upsert:
                    m["role"] = role
                    return True
                return False
            if name not in self.partitions:  # add_partition_member creates a missing partition
                self.partitions[name] = {"partition": name, "created_at": now_iso()}
            self.members[(name, uid)] = {"role": role, "added_at": now_iso()}
            return True

    def set_role(self, name, uid, role):
        with self.lock:
            m = self.members.get((name, uid))
            if m is None:
                return False
            m["role"] = role
            return True

    def remove_member(self, name, uid):
        with self.lock:
            return self.members.pop((name, uid), None) is not None

    def dump(self):
        """The whole database, in a stable order (GET /__test/dump)."""
        with self.lock:
            users = []
            for k in sorted(self.users):
                u = self.users[k]
                d = {f: u[f] for f in ("id", "display_name", "external_user_id", "email", "is_admin",
                                       "file_quota", "file_count", "created_at")}
                d["token_sha256"] = u["token_hash"]
                users.append(d)
            return {
                "users": users,
                "partitions": [dict(self.partitions[p]) for p in sorted(self.partitions)],
                "memberships": [{"partition": p, "user_id": u, "role": m["role"], "added_at": m["added_at"]}
                                for (p, u), m in sorted(self.members.items())],
                "next_user_id": self.next_id,
            }


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


# --- public shapes of a user (§6.1; OpenRag 1.1.8's PartitionFileManager) ---------------------
def echo_user(u):  # the stand-in's echo only
    return {k: u[k] for k in ("id", "display_name", "external_user_id", "email", "is_admin")}


def user_dict(u, memberships, old):
    """GET /users/{id}, and request.state.user: 1.1.8 has no email in it."""
    keys = ("id", "display_name", "external_user_id", "is_admin", "file_quota", "file_count") if old else \
        ("id", "display_name", "external_user_id", "email", "is_admin", "file_quota", "file_count")
    d = {k: u[k] for k in keys}
    d["memberships"] = memberships
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


def patched_dict(u, old):
    if old:  # update_user's dict (no email) serialised through response_model=UserPublic: email is null
        return {"display_name": u["display_name"], "external_user_id": u["external_user_id"], "email": None,
                "is_admin": u["is_admin"], "file_quota": u["file_quota"], "id": u["id"],
                "created_at": u["created_at"], "file_count": u["file_count"]}
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


def parse_form(content_type, body):
    """Starlette's request.form(): urlencoded or multipart fields (last duplicate wins); a body of any
    other type gives an empty form (FastAPI then reports the required fields as missing)."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if ctype == "multipart/form-data":
        m = re.search(r'boundary="?([^";]+)"?', content_type)
        if not m:
            raise HTTPError(400, {"detail": "There was an error parsing the body"})
        out = {}
        for part in body.split(b"--" + m.group(1).encode("latin-1"))[1:]:
            if part.startswith(b"--"):
                break
            head, _, value = part.partition(b"\r\n\r\n")
            name = re.search(rb'name="([^"]*)"', head)
            if name and b"filename=" not in head:
                out[name.group(1).decode("utf-8", "replace")] = \
                    (value[:-2] if value.endswith(b"\r\n") else value).decode("utf-8", "replace")
        return out
    return {}


def form_value(form, name):
    """FastAPI reads an empty form value as an absent one."""
    v = form.get(name)
    return None if v == "" else v


def form_int(form, name, errors):
    v = form_value(form, name)
    if v is None:
        errors.append(v_err("missing", ["body", name], "Field required", None))
    elif INT_RE.match(v):
        return int(v)
    else:
        errors.append(v_err("int_parsing", ["body", name],
                            "Input should be a valid integer, unable to parse string as an integer", v))
    return None


ROLE_EXPECTED = "'viewer', 'editor' or 'owner'"


def form_role(form, errors, default=None):
    v = form_value(form, "role")
    if v is None:
        if default is not None:
            return default
        errors.append(v_err("missing", ["body", "role"], "Field required", None))
    elif v in ROLES:  # a Literal: exact, case-sensitive
        return v
    else:
        e = v_err("literal_error", ["body", "role"], f"Input should be {ROLE_EXPECTED}", v)
        e["ctx"] = {"expected": ROLE_EXPECTED}
        errors.append(e)
    return None


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
        if isinstance(body, Raw):
            data = bytes(body)
        elif body is not None:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        # As Chainlit behind a GZipMiddleware: its JSON compressed for a client that accepts it.
        gzipped = (body is not None and len(data) > 64 and self.path.startswith("/chainlit")
                   and "gzip" in self.headers.get("Accept-Encoding", ""))
        if gzipped:
            import gzip
            data = gzip.compress(data)
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
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

    def old(self):
        """OpenRag 1.1.8 (the real backend verified; issue 16) rather than a later version."""
        return self.server.cfg.generation == "1.1.8"

    @staticmethod
    def error_body(code, message, **extra):  # OpenRAGError.to_dict(): extra = the exception's kwargs
        return {"detail": f"[{code}]: {message}", "extra": extra}

    def not_found(self, uid):
        msg = f"User with ID {uid} does not exist."
        if self.old():  # VDBUserNotFound, raised by the Ray actor's _check_user_exists
            raise HTTPError(404, self.error_body("VDB_USER_NOT_FOUND", msg,
                                                 collection_name=self.server.cfg.collection, user_id=uid))
        raise HTTPError(404, self.error_body("USER_NOT_FOUND", msg))

    def partition_not_found(self, p):
        msg = f"Partition '{p}' does not exist."
        if self.old():
            raise HTTPError(404, self.error_body("VDB_PARTITION_NOT_FOUND", msg,
                                                 collection_name=self.server.cfg.collection, partition=p))
        raise HTTPError(404, self.error_body("PARTITION_NOT_FOUND", msg))

    def membership_not_found(self, p, uid):
        msg = f"User with ID {uid} is not a member of partition '{p}'."
        if self.old():
            raise HTTPError(404, self.error_body("VDB_MEMBERSHIP_NOT_FOUND", msg,
                                                 collection_name=self.server.cfg.collection, user_id=uid,
                                                 partition=p))
        raise HTTPError(404, self.error_body("MEMBERSHIP_NOT_FOUND", msg))

    def conflict(self, message):
        if self.server.cfg.conflict_status == 500:  # the unique violation is an unhandled exception
            raise HTTPError(500, UNEXPECTED)
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
            status, body, headers = 500, UNEXPECTED, []
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
        if path == "/__test/slow-list" and self.command == "POST":
            # GET /users/ (the whole list) answers N ms late from now on: a long list; with
            # fail=1, then 503 (a backend in trouble).
            query = parse_qs(urlsplit(self.path).query)
            self.server.list_delay_ms = int(query.get("ms", ["0"])[0])
            self.server.list_fails = query.get("fail", ["0"])[0] == "1"
            return self.send(204)
        if path == "/__test/slow-create" and self.command == "POST":
            # POST /users/ answers N ms after the user is stored (visible to other requests
            # meanwhile), as a backend busy after its commit does.
            query = parse_qs(urlsplit(self.path).query)
            self.server.create_delay_ms = int(query.get("ms", ["0"])[0])
            return self.send(204)
        if path == "/__test/slow-patch" and self.command == "POST":
            # PATCH /users/{id} answers N ms late from now on; GET: how many have begun.
            query = parse_qs(urlsplit(self.path).query)
            self.server.patch_delay_ms = int(query.get("ms", ["0"])[0])
            return self.send(204)
        if path == "/__test/slow-patch" and self.command == "GET":
            return self.send(200, {"begun": getattr(self.server, "patches_begun", 0)})
        if path == "/__test/fail-handoff" and self.command == "POST":
            # The next n POST /auth/chainlit-session answer 503, whatever the generation.
            query = parse_qs(urlsplit(self.path).query)
            self.server.handoff_fails = int(query.get("n", ["1"])[0])
            return self.send(204)
        if path == "/__test/slow-handoff" and self.command == "POST":
            # POST /auth/chainlit-session answers N ms late from now on.
            query = parse_qs(urlsplit(self.path).query)
            self.server.handoff_delay_ms = int(query.get("ms", ["0"])[0])
            return self.send(204)
        if path == "/__test/fail-get-user" and self.command == "POST":
            # The next n GET /users/{id} answer 503: an admin API that cannot say, for a
            # moment, whose an account is.
            query = parse_qs(urlsplit(self.path).query)
            self.server.get_user_fails = int(query.get("n", ["1"])[0])
            return self.send(204)
        if path == "/__test/broken-create" and self.command == "POST":
            # POST /users/ commits, then answers with a body cut short (a lost answer).
            query = parse_qs(urlsplit(self.path).query)
            self.server.create_broken = query.get("on", ["1"])[0] == "1"
            return self.send(204)
        if path == "/__test/chainlit/forget" and self.command == "POST":
            self.server.chainlit_sessions.clear()  # Chainlit restarted: its sessions are gone
            return self.send(204)
        if path == "/__test/dump" and self.command in ("GET", "HEAD"):
            return self.send(200, self.server.store.dump())
        if path.startswith("/__test/partition/") and self.command == "POST":
            name = path[len("/__test/partition/"):]
            if not name or "/" in name:
                return self.send(404, {"detail": "Not Found"})
            return self.send(201 if self.server.store.create_partition(name) else 409)
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
        if path == "/auth/chainlit-session":
            time.sleep(getattr(self.server, "handoff_delay_ms", 0) / 1000)
        if path == "/auth/chainlit-session" and getattr(self.server, "handoff_fails", 0) > 0:
            self.server.handoff_fails -= 1  # --test-hooks: POST /__test/fail-handoff?n=N
            raise HTTPError(503, {"detail": "Service unavailable"})
        get_like = method in ("GET", "HEAD")
        old = self.old()
        if old:  # 1.1.8's middleware lets every /chainlit* path through: Chainlit does its own auth
            public = path in BYPASS_PATHS_118 or path.startswith("/chainlit")
        else:
            public = path in BYPASS_PATHS or path.startswith("/assets/")
        if public:
            if path in AUTH_FLOW_ROUTES:
                allowed = AUTH_FLOW_ROUTES[path]
                if not (method == allowed or (allowed == "GET" and method == "HEAD")):
                    return self.method_not_allowed([allowed] + (["HEAD"] if allowed == "GET" else []))
                return 400, {"detail": AUTH_MODE_GATE}, []
            if path == "/version":
                if not get_like:
                    return self.method_not_allowed(["GET", "HEAD"])
                return 200, {"version": self.server.cfg.app_version}, []
            if old and path.startswith("/chainlit"):
                return self.chainlit_118(ctx, entry)
            body = self.echo(ctx, None, None, None, public=True)
            if path == "/auth/chainlit-logout-signal":
                body["logged_out"] = "openrag_chainlit_logout" in cookie_names(self.headers.get_all("Cookie") or [])
            return 200, body, []
        user, via, cookie, token = self.authenticate(path, ctx["query"])
        entry["auth_via"], entry["user_id"] = via, user["id"]

        if path == "/auth/me":
            if not get_like:
                return self.method_not_allowed(["GET", "HEAD"])
            return 200, {"user_id": user["id"], "email": None if old else user["email"], "auth_method": "token",
                         "session_expires_at": None}, []
        if old and path in ("/auth/chainlit-session", "/auth/chainlit-logout-signal"):
            return 404, {"detail": "Not Found"}, []  # no such routes in 1.1.8 (no Chainlit hand-off)
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
        if old and path == "/metrics":  # 1.1.8: an ordinary route with require_admin
            self.require_admin(user)
        if path == "/users" or path.startswith("/users/"):
            if path in ("/users", "/users/") and self.command == "GET":
                time.sleep(getattr(self.server, "list_delay_ms", 0) / 1000)
                if getattr(self.server, "list_fails", False):
                    return 503, {"detail": "listing failed (test hook)"}, []
            return self.users_api(ctx, user)
        if path == "/partition" or path.startswith("/partition/"):
            answer = self.partition_api(ctx, user)
            if answer is not None:
                return answer
        if path == "/static":  # the StaticFiles mount matches /static/...: redirect_slashes answers
            return 307, None, [("Location", self.slash_redirect(ctx))]
        if self.server.cfg.test_hooks and path.startswith(REFUSE_HOOK):
            return self.refuse(path[len(REFUSE_HOOK):], ctx["query"])
        return 200, self.echo(ctx, user, via, cookie), []

    # --- Chainlit as mounted by OpenRag 1.1.8 in token mode (Chainlit 2.6) -------------------------
    # Its own password login (the password is the user's OpenRag token, checked against /users/info)
    # and its own session: the `access_token` cookie (or a bearer holding that session token).
    # The openrag_session / openrag_chainlit_token cookies mean nothing to it.
    CHAINLIT_PROTECTED = re.compile(r"^/chainlit/(user|feedback|project/(?!translations$).+)$")

    def chainlit_118(self, ctx, entry):
        path, method = ctx["path"], self.command
        store = self.server.store
        if path == "/chainlit/login":
            if method != "POST":
                return self.method_not_allowed(["POST"])
            form = parse_form(self.header("Content-Type"), ctx["body"])
            errors = [v_err("missing", ["body", n], "Field required", None)
                      for n in ("username", "password") if form_value(form, n) is None]
            self.raise_422(errors)
            user = store.by_token(form["password"])  # password_auth_callback: GET /users/info as that token
            if user is None:
                raise HTTPError(401, {"detail": "credentialssignin"})
            session = f"cl-{secrets.token_hex(24)}"
            self.server.chainlit_sessions[session] = user["id"]
            self.server.chainlit_keys[session] = form["password"]
            entry["auth_via"], entry["user_id"] = "chainlit", user["id"]
            return 200, {"success": True}, [("Set-Cookie", f"access_token={session}; HttpOnly; Max-Age=1296000; "
                                                           "Path=/; SameSite=lax")]
        if self.CHAINLIT_PROTECTED.match(path):
            cookies = parse_cookie_header(self.header("Cookie") or "")
            cookie, tok = "access_token", cookies.get("access_token")
            if not tok:
                tok, i = "", 0
                while f"access_token_{i}" in cookies:
                    tok, i = tok + cookies[f"access_token_{i}"], i + 1
            if not tok:
                cookie, tok = None, None
                scheme, _, param = (self.headers.get("Authorization") or "").partition(" ")
                if scheme.lower() == "bearer":
                    tok = param
            uid = self.server.chainlit_sessions.get(tok) if tok else None
            user = store.get(uid) if uid is not None else None
            if user is None:  # Chainlit's authenticate_user: the token is not one of its JWTs
                raise HTTPError(401, {"detail": "Invalid authentication token"})
            entry["auth_via"], entry["user_id"] = "chainlit", user["id"]
            answer = self.echo(ctx, user, "chainlit", cookie)
            if path == "/chainlit/user":  # app_front.py keeps the password (the token) in the user's metadata
                answer["metadata"] = {"role": "user", "provider": "credentials",
                                      "api_key": self.server.chainlit_keys.get(tok), "extra": {}}
            return 200, answer, []
        return 200, self.echo(ctx, None, None, None, public=True), []

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
        if self.old():  # its users list has no email
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
        info = user_dict(user, self.server.store.memberships_of(user["id"]), self.old())
        info.update({"file_count": user["file_count"], "pending_files": 0, "total_files": user["file_count"],
                     "file_quota": quota})
        if not self.old():
            info["chainlit_enabled"] = cfg.chainlit_enabled
        return 200, info, []

    def create_user(self, ctx, user, _uid):
        self.require_admin(user)
        errors = []
        fields = self.parse_body(ctx, errors)
        self.raise_422(errors)
        cfg, old = self.server.cfg, self.old()
        # The UserCreate model defaults file_quota to 10 when the field is absent.
        quota = fields["file_quota"] if "file_quota" in fields else 10
        ext, email = fields.get("external_user_id"), fields.get("email")
        if old:  # no validation; external_user_id stored as sent; an explicit null quota -> the default if > 0
            email = email.strip().lower() if email else None
            if quota is None and cfg.default_file_quota > 0:
                quota = cfg.default_file_quota
        else:
            self.validate_profile(fields.get("display_name"), email)
            ext, email = norm_external_id(ext), norm_email(email)
        try:
            row, token = self.server.store.create(fields.get("display_name"), ext, email,
                                                  fields.get("is_admin", False), quota,
                                                  consume_id_on_conflict=cfg.conflict_status == 500)
        except Conflict as e:
            self.conflict(str(e))
        time.sleep(getattr(self.server, "create_delay_ms", 0) / 1000)
        if getattr(self.server, "create_broken", False):
            return 201, Raw(json.dumps(created_dict(row, token)).encode()[:20]), []
        return 201, created_dict(row, token), []

    def get_user(self, ctx, user, uid):
        self.require_admin(user)
        if getattr(self.server, "get_user_fails", 0) > 0:
            self.server.get_user_fails -= 1
            raise HTTPError(503, {"detail": "Service unavailable"})
        errors = []
        uid = self.parse_id(uid, errors)
        self.raise_422(errors)
        row = self.server.store.get(uid)
        if row is None:
            self.not_found(uid)
        return 200, user_dict(row, self.server.store.memberships_of(uid), self.old()), []

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
        checked = not self.old()  # OpenRag 1.1.8 checks nothing here
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
        self.server.patches_begun = getattr(self.server, "patches_begun", 0) + 1
        time.sleep(getattr(self.server, "patch_delay_ms", 0) / 1000)
        errors = []
        uid = self.parse_id(uid, errors)
        fields = self.parse_body(ctx, errors)
        self.raise_422(errors)
        if uid == 1 and fields.get("is_admin", True) is False:
            raise HTTPError(400, {"detail": "Cannot revoke admin privileges from the default admin user."})
        if self.server.store.get(uid) is None:
            self.not_found(uid)
        if not self.old():  # 1.1.8 sets every field it was sent as sent (setattr)
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
        return 200, patched_dict(row, self.old()), []

    # --- /partition: the membership routes of OpenRag's partition router -------------------------
    PARTITION_ROUTES = [
        ("GET", re.compile(r"^/partition/$"), "list_partitions"),
        ("POST", re.compile(r"^/partition/(?P<p>[^/]+)$"), "create_partition"),
        ("DELETE", re.compile(r"^/partition/(?P<p>[^/]+)$"), "delete_partition"),
        ("GET", re.compile(r"^/partition/(?P<p>[^/]+)$"), "list_files"),
        ("GET", re.compile(r"^/partition/(?P<p>[^/]+)/users$"), "list_members"),
        ("POST", re.compile(r"^/partition/(?P<p>[^/]+)/users$"), "add_member"),
        ("PATCH", re.compile(r"^/partition/(?P<p>[^/]+)/users/(?P<uid>[^/]+)$"), "update_member"),
        ("DELETE", re.compile(r"^/partition/(?P<p>[^/]+)/users/(?P<uid>[^/]+)$"), "remove_member"),
    ]

    def partition_api(self, ctx, user):
        """None for a /partition path none of these routes has (the echo answers it)."""
        path, method = ctx["path"], self.command
        allowed = []
        for m, rx, name in self.PARTITION_ROUTES:
            match = rx.match(path)
            if not match:
                continue
            if m == method or (m == "GET" and method == "HEAD"):
                return getattr(self, name)(ctx, user, **match.groupdict())
            allowed += [m] + (["HEAD"] if m == "GET" else [])
        if allowed:
            return self.method_not_allowed(sorted(set(allowed)))
        other = path[:-1] if path.endswith("/") else path + "/"
        if any(rx.match(other) for _, rx, _ in self.PARTITION_ROUTES):
            return 307, None, [("Location", self.slash_redirect(ctx))]
        return None

    def ensure_role(self, user, p, required):
        """routers/utils.py ensure_partition_role. SUPER_ADMIN_MODE lets an admin through everywhere;
        otherwise an admin is an ordinary user here. No membership: 403 if the partition exists, else
        the call goes on (and meets the partition's absence)."""
        store = self.server.store
        if self.server.cfg.super_admin_mode and user.get("is_admin"):
            return
        m = store.membership(p, user["id"])
        if m is None:
            if store.partition_exists(p):
                raise HTTPError(403, {"detail": f"Access to partition '{p}' forbidden"})
            return
        if ROLES[m["role"]] < ROLES[required]:
            raise HTTPError(403, {"detail": f"{required.capitalize()} role required for partition '{p}'"})

    def list_partitions(self, ctx, user):
        store = self.server.store
        if user.get("is_admin") and self.server.cfg.super_admin_mode:
            return 200, {"partitions": store.list_partitions()}, []
        return 200, {"partitions": store.partitions_of(user["id"])}, []

    def create_partition(self, ctx, user, p):
        # Any authenticated user; the creator becomes its owner (SUPER_ADMIN_MODE plays no part).
        if not self.server.store.create_partition(p, owner_id=user["id"]):
            raise HTTPError(409, {"detail": f"Partition '{p}' already exists."})
        return 201, None, []

    def delete_partition(self, ctx, user, p):
        self.ensure_role(user, p, "owner")
        if not self.server.store.delete_partition(p):
            self.partition_not_found(p)
        return 204, None, []

    def list_files(self, ctx, user, p):
        self.ensure_role(user, p, "viewer")
        return 200, {"files": []}, []  # the stand-in indexes nothing

    def list_members(self, ctx, user, p):
        self.ensure_role(user, p, "owner")
        if not self.server.store.partition_exists(p):
            self.partition_not_found(p)
        return 200, {"members": self.server.store.members_of(p)}, []

    def add_member(self, ctx, user, p):
        self.ensure_role(user, p, "owner")  # dependencies run before the form is validated
        store = self.server.store
        form = parse_form(self.header("Content-Type"), ctx["body"])
        errors = []
        uid = form_int(form, "user_id", errors)
        role = form_role(form, errors, default="viewer")
        self.raise_422(errors)
        if not store.partition_exists(p):
            self.partition_not_found(p)
        if store.get(uid) is None:
            self.not_found(uid)
        if not store.add_member(p, uid, role, upsert=self.old()):
            raise HTTPError(409, self.error_body(
                "PARTITION_MEMBER_EXISTS", f"User {uid} is already a member of partition '{p}'. "
                                           f"Use PATCH /partition/{p}/users/{uid} to change their role."))
        return 201, None, []

    def _member_call(self, ctx, user, p, uid, need_role):
        self.ensure_role(user, p, "owner")
        store = self.server.store
        errors = []
        uid = self.parse_id(uid, errors)
        role = None
        if need_role:
            role = form_role(parse_form(self.header("Content-Type"), ctx["body"]), errors)
        self.raise_422(errors)
        if not store.partition_exists(p):  # _check_membership_exists
            self.partition_not_found(p)
        if store.get(uid) is None:
            self.not_found(uid)
        if store.membership(p, uid) is None:
            self.membership_not_found(p, uid)
        return uid, role

    def update_member(self, ctx, user, p, uid):
        uid, role = self._member_call(ctx, user, p, uid, True)
        self.server.store.set_role(p, uid, role)
        return 200, None, []

    def remove_member(self, ctx, user, p, uid):
        uid, _ = self._member_call(ctx, user, p, uid, False)
        self.server.store.remove_member(p, uid)
        return 204, None, []


class Config:
    pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # A client that gave up before the answer (a timeout the test provoked): not an error.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


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
        memberships = entry.get("memberships") or []
        if isinstance(memberships, dict):
            memberships = [{"partition": k, "role": v} for k, v in memberships.items()]
        if not isinstance(memberships, list) or not all(
                isinstance(m, dict) and isinstance(m.get("partition"), str) and m["partition"]
                and "/" not in m["partition"] and m.get("role") in ROLES for m in memberships):
            fail(f"--users-file entry {i}: memberships must be [{{\"partition\": P, \"role\": "
                 f"viewer|editor|owner}}] or {{P: role}}")
        try:
            row, _ = store.create(entry.get("display_name"), norm_external_id(entry.get("external_user_id")),
                                  norm_email(entry.get("email")), bool(entry.get("is_admin", False)),
                                  entry.get("file_quota"), token=token, file_count=int(entry.get("file_count", 0)))
        except Conflict as e:
            fail(f"--users-file entry {i}: {e}")
        for m in memberships:  # a partition named here is created if --partitions did not
            store.add_member(m["partition"], row["id"], m["role"], upsert=True)


def parse_bool(value):
    v = value.strip().lower()
    if v not in ("true", "false"):
        raise argparse.ArgumentTypeError("expected true or false")
    return v == "true"


def main():
    ap = argparse.ArgumentParser(description="OpenRag backend stand-in (AUTH_MODE=token)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--users-file")
    ap.add_argument("--partitions", default="",
                    help="comma-separated partitions to create at start, with no members")
    ap.add_argument("--test-hooks", action="store_true")
    ap.add_argument("--auth-failure-limit", type=int, default=0)
    ap.add_argument("--conflict-status", type=int, choices=(409, 500), default=None,
                    help="a duplicate email/external_user_id: 409, or OpenRag 1.1.8's unhandled 500 (which "
                         "uses up a user id); default 500 with --generation 1.1.8, else 409")
    ap.add_argument("--keep-alive-timeout", type=float, default=5.0)
    ap.add_argument("--hide-tokens", action="store_true",
                    help="echo that a token came, not the token (for the demo's pages)")
    ap.add_argument("--generation", choices=("1.1.8", "later"), default="later",
                    help="the OpenRag version to reproduce where versions differ (see the docstring)")
    ap.add_argument("--super-admin-mode", type=parse_bool, default=True, metavar="true|false",
                    help="SUPER_ADMIN_MODE: admins bypass the partition role checks (default true here; "
                         "OpenRag's own default is false)")
    ap.add_argument("--app-version", default=None,
                    help="what GET /version answers (default 1.1.8 or 1.1.13 by --generation)")
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
    cfg.generation = args.generation
    cfg.conflict_status = args.conflict_status or (500 if args.generation == "1.1.8" else 409)
    cfg.keep_alive_timeout = args.keep_alive_timeout
    cfg.hide_tokens = args.hide_tokens
    cfg.super_admin_mode = args.super_admin_mode
    cfg.app_version = args.app_version or ("1.1.8" if args.generation == "1.1.8" else "1.1.13")
    cfg.collection = os.getenv("VDB_COLLECTION_NAME", "vdb_test")
    try:
        cfg.default_file_quota = int(os.getenv("DEFAULT_FILE_QUOTA", "-1"))
    except ValueError:
        fail("DEFAULT_FILE_QUOTA must be an integer")
    cfg.chainlit_enabled = os.getenv("WITH_CHAINLIT_UI", "true").strip().lower() == "true"
    cfg.trusted_proxies = {h.strip() for h in os.getenv("UVICORN_FORWARDED_ALLOW_IPS", "127.0.0.1").split(",")
                           if h.strip()}

    store = Store()
    store.create("Admin", None, None, True, None, token=auth_token, user_id=1)  # ensure_admin_user
    for name in (n.strip() for n in args.partitions.split(",")):
        if name:
            if "/" in name:
                fail(f"--partitions: a partition name has no '/': {name!r}")
            store.create_partition(name)
    if args.users_file:
        load_seed(store, args.users_file)

    server = Server(("127.0.0.1", args.port), Handler)
    server.cfg, server.store = cfg, store
    server.limiter, server.log = FailureLimiter(args.auth_failure_limit), RequestLog()
    server.chainlit_sessions = {}  # 1.1.8's Chainlit: its session token -> user id
    server.chainlit_keys = {}  # ... -> the password it logged in with (its metadata.api_key)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
