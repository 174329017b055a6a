#!/usr/bin/env python3
"""Browserless login against the test IdP (tests/idp/server.mjs). Python 3 stdlib only.

  flow.py login <authorization-url> <login> [--password PW]
      Follows the IdP's login and consent forms and prints the final redirect to the RP's
      redirect_uri (with code, state, iss). The RP itself is never contacted.

  flow.py selftest <issuer> [--login alice] [--client-id rp] [--client-secret S] [--redirect-uri U]
                            [--backchannel-port N]
      End-to-end check of the IdP: discovery, authorization URL with state/nonce/PKCE S256/
      prompt=consent, login, code exchange with Basic auth + code_verifier, RS256 id_token
      signature/claims check, userinfo, refresh, /__test/revoke-grants, and RP-initiated logout
      (with a back-channel listener on --backchannel-port when given; the IdP must have been started
      with RP_BACKCHANNEL_URI=http://127.0.0.1:N/backchannel). Prints JSON lines; exits 1 on failure.

The exact request sequence is documented in README.md ("Login without a browser").
"""
import argparse
import os, base64, re, hashlib, html.parser, http.cookiejar, http.server, json, secrets, sys, threading
import urllib.error, urllib.parse, urllib.request

DEFAULT_SECRET = 'rp-secret-0123456789-0123456789-0123'


class NoRedirect(urllib.request.HTTPRedirectHandler):
    # Redirects are followed by hand so that the walk can stop at the RP's redirect_uri.
    def redirect_request(self, *args, **kwargs):
        return None


class Forms(html.parser.HTMLParser):
    """Collects the first <form>: its action and every named <input> with its value."""
    def __init__(self):
        super().__init__()
        self.action, self.fields = None, {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'form' and self.action is None:
            self.action = a.get('action')
        elif tag == 'input' and a.get('name') and self.action is not None:
            self.fields.setdefault(a['name'], a.get('value') or '')


class Client:
    def __init__(self, jar_file=None):
        # A file-backed jar lets a later `logout` reuse the IdP session of an earlier `login`.
        self.jar_file = jar_file
        self.jar = http.cookiejar.MozillaCookieJar(jar_file) if jar_file else http.cookiejar.CookieJar()
        if jar_file and os.path.exists(jar_file):
            self.jar.load(ignore_discard=True, ignore_expires=True)
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect())

    def request(self, method, url, data=None, headers=None):
        """Returns (status, headers, body) without following redirects or raising on 4xx/5xx."""
        body = urllib.parse.urlencode(data).encode() if isinstance(data, dict) else data
        # oidc-provider answers errors with an HTML page (even at /token) when Accept prefers
        # text/html, so API calls ask for JSON and only the login walk asks for HTML.
        req = urllib.request.Request(url, data=body, method=method, headers={'Accept': 'application/json', **(headers or {})})
        if isinstance(data, dict):
            req.add_header('Content-Type', 'application/x-www-form-urlencoded')
        try:
            with self.opener.open(req, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()


    def save(self):
        if self.jar_file:
            self.jar.save(ignore_discard=True, ignore_expires=True)


def end_session(url, client):
    """Follows an RP's redirect to end_session_endpoint and confirms the logout (the IdP then
    POSTs logout tokens to the RPs' back-channel URIs). Returns the final redirect."""
    st, h, body = client.request('GET', url, headers={'Accept': 'text/html'})
    f = Forms()
    f.feed(body.decode('utf-8', 'replace'))
    if st != 200 or 'xsrf' not in f.fields:
        raise RuntimeError(f'end_session: HTTP {st}: {text_of(body)}')
    st, h, body = client.request('POST', urllib.parse.urljoin(url, f.action), {**f.fields, 'logout': 'yes'})
    if st not in (302, 303):
        raise RuntimeError(f'end_session confirm: HTTP {st}: {text_of(body)}')
    return urllib.parse.urljoin(url, h['Location'])


def text_of(body):
    """Visible text of an HTML page (oidc-provider's error pages), shortened for one-line errors."""
    body = body.decode('utf-8', 'replace')
    body = re.sub(r'(?s)<(style|script|head)\b.*?</\1>|<[^>]+>', ' ', body)
    return ' '.join(body.split())[:300]


def login(auth_url, user, password='test', client=None, trace=None):
    """Walks authorization URL -> login form -> consent form -> redirect to redirect_uri.

    Returns the final callback URL (redirect_uri?code=...&state=...&iss=...), or raises.
    """
    c = client or Client()
    redirect_uri = urllib.parse.parse_qs(urllib.parse.urlsplit(auth_url).query).get('redirect_uri', [None])[0]
    method, url, data, steps = 'GET', auth_url, None, 0
    while steps < 12:
        steps += 1
        status, headers, body = c.request(method, url, data, {'Accept': 'text/html'})
        if trace is not None:
            trace.append(f'{method} {url} -> {status} {headers.get("Location") or ""}'.rstrip())
        if status in (302, 303):
            url, method, data = urllib.parse.urljoin(url, headers['Location']), 'GET', None
            if redirect_uri and url.split('?')[0] == redirect_uri:
                return url
            continue
        if status != 200:
            raise RuntimeError(f'{method} {url}: HTTP {status}: {text_of(body)}')
        f = Forms()
        f.feed(body.decode('utf-8', 'replace'))
        if f.action is None:
            raise RuntimeError(f'{url}: no form on page: {text_of(body)}')
        prompt = f.fields.get('prompt')
        if prompt == 'login':
            f.fields.update(login=user, password=password)
        elif b'document.forms[0].submit()' in body:
            # A form the page submits itself, as a browser would: oidc-provider ends the IdP
            # session of another account this way before the new one is signed in.
            pass
        elif prompt != 'consent':
            raise RuntimeError(f'{url}: unexpected form prompt={prompt!r}')
        method, url, data = 'POST', urllib.parse.urljoin(url, f.action), f.fields
    raise RuntimeError('too many steps before reaching redirect_uri')


# ---- selftest helpers -------------------------------------------------------------------------

def b64d(s):
    return base64.urlsafe_b64decode(s + '=' * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b'=').decode()


def verify_rs256(jwt, jwks):
    """RS256 check with plain integer arithmetic (PKCS#1 v1.5), so no crypto package is needed."""
    h64, p64, s64 = jwt.split('.')
    header = json.loads(b64d(h64))
    key = next(k for k in jwks['keys'] if k['kid'] == header['kid'])
    n, e = (int.from_bytes(b64d(key[x]), 'big') for x in ('n', 'e'))
    k = (n.bit_length() + 7) // 8
    em = pow(int.from_bytes(b64d(s64), 'big'), e, n).to_bytes(k, 'big')
    digest_info = bytes.fromhex('3031300d060960864801650304020105000420') + hashlib.sha256(f'{h64}.{p64}'.encode()).digest()
    if em != b'\x00\x01' + b'\xff' * (k - 3 - len(digest_info)) + b'\x00' + digest_info:
        raise RuntimeError('id_token signature does not verify')
    return header, json.loads(b64d(p64))


def check(cond, what):
    if not cond:
        raise RuntimeError(f'check failed: {what}')


def selftest(a):
    out = lambda **kw: print(json.dumps(kw), flush=True)
    c = Client()
    j = lambda status_headers_body: json.loads(status_headers_body[2])
    disco = j(c.request('GET', a.issuer + '/.well-known/openid-configuration'))
    check(disco['issuer'] == a.issuer, f"issuer {disco['issuer']} == {a.issuer}")
    jwks = j(c.request('GET', disco['jwks_uri']))
    basic = {'Authorization': 'Basic ' + base64.b64encode(f'{a.client_id}:{a.client_secret}'.encode()).decode()}

    received = []  # back-channel logout_tokens
    if a.backchannel_port:
        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers['Content-Length']))
                received.append(urllib.parse.parse_qs(body.decode())['logout_token'][0])
                self.send_response(200); self.end_headers()
            def log_message(self, *_):
                pass
        srv = http.server.HTTPServer(('127.0.0.1', a.backchannel_port), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    state, nonce, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(16), secrets.token_urlsafe(48)
    auth_url = disco['authorization_endpoint'] + '?' + urllib.parse.urlencode({
        'client_id': a.client_id, 'response_type': 'code', 'redirect_uri': a.redirect_uri,
        'scope': 'openid email profile offline_access', 'state': state, 'nonce': nonce, 'prompt': 'consent',
        'code_challenge': b64e(hashlib.sha256(verifier.encode()).digest()), 'code_challenge_method': 'S256'})
    trace = []
    cb = login(auth_url, a.login, client=c, trace=trace)
    out(step='login', trace=trace, callback=cb, cookies=sorted({ck.name for ck in c.jar}))
    q = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(cb).query).items()}
    check(q.get('state') == state and 'code' in q and q.get('iss') == a.issuer, 'callback carries code, state, iss')

    st, _, body = c.request('POST', disco['token_endpoint'], {
        'grant_type': 'authorization_code', 'code': q['code'], 'redirect_uri': a.redirect_uri, 'code_verifier': verifier}, basic)
    tok = json.loads(body)
    check(st == 200, f'token exchange: {st} {tok}')
    header, claims = verify_rs256(tok['id_token'], jwks)
    out(step='token', keys=sorted(tok), scope=tok.get('scope'), id_token_header=header, id_token_claims=claims)
    check('refresh_token' in tok, 'refresh_token issued (offline_access + prompt=consent)')
    check(claims['nonce'] == nonce and claims['aud'] == a.client_id and claims['iss'] == a.issuer, 'nonce/aud/iss')
    check(claims['sub'] == a.login and 'sid' in claims, 'sub == login and sid present')

    st, _, body = c.request('GET', disco['userinfo_endpoint'], headers={'Authorization': 'Bearer ' + tok['access_token']})
    out(step='userinfo', status=st, body=json.loads(body))

    st, _, body = c.request('POST', disco['token_endpoint'], {'grant_type': 'refresh_token', 'refresh_token': tok['refresh_token']}, basic)
    ref = json.loads(body)
    check(st == 200 and 'id_token' in ref, f'refresh: {st} {ref}')
    out(step='refresh', status=st, keys=sorted(ref), rotated=ref.get('refresh_token') != tok['refresh_token'],
        id_token_claims=verify_rs256(ref['id_token'], jwks)[1])

    # Logout with back-channel notification, while the session and grant still exist.
    st, h, body = c.request('GET', disco['end_session_endpoint'] + '?' + urllib.parse.urlencode({
        'id_token_hint': tok['id_token'], 'post_logout_redirect_uri': a.post_logout_uri, 'state': 'bye'}),
        headers={'Accept': 'text/html'})
    f = Forms(); f.feed(body.decode())
    check(st == 200 and 'xsrf' in f.fields, f'end_session confirm page: {st}')
    st, h, _ = c.request('POST', urllib.parse.urljoin(disco['end_session_endpoint'], f.action), {**f.fields, 'logout': 'yes'})
    out(step='logout', status=st, location=h.get('Location'), logout_tokens=[verify_rs256(t, jwks) for t in received])
    check(st == 303 and h['Location'] == a.post_logout_uri + '?state=bye', 'logout redirect')
    if a.backchannel_port:
        check(len(received) == 1 and verify_rs256(received[0], jwks)[1]['sid'] == claims['sid'], 'logout_token sid')

    # A new login, then the test hook revokes its grants: the refresh token must then be refused.
    auth_url2 = auth_url.replace(f'state={state}', 'state=second')
    cb2 = login(auth_url2, a.login, client=c)
    code2 = urllib.parse.parse_qs(urllib.parse.urlsplit(cb2).query)['code'][0]
    tok2 = json.loads(c.request('POST', disco['token_endpoint'], {
        'grant_type': 'authorization_code', 'code': code2, 'redirect_uri': a.redirect_uri, 'code_verifier': verifier}, basic)[2])
    revoked = j(c.request('POST', f'{a.issuer}/__test/revoke-grants?sub={urllib.parse.quote(a.login)}', b''))
    st, _, body = c.request('POST', disco['token_endpoint'], {'grant_type': 'refresh_token', 'refresh_token': tok2['refresh_token']}, basic)
    out(step='revoke-grants', revoke_response=revoked, refresh_status=st, refresh_body=json.loads(body))
    check(st == 400 and json.loads(body)['error'] == 'invalid_grant', 'refresh after revoke-grants is invalid_grant')

    out(step='events', events=j(c.request('GET', a.issuer + '/__test/events')))
    out(ok=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    lp = sub.add_parser('login')
    lp.add_argument('auth_url'); lp.add_argument('login'); lp.add_argument('--password', default='test')
    lp.add_argument('--jar', help='cookie file kept for a later logout')
    op = sub.add_parser('logout')
    op.add_argument('end_session_url'); op.add_argument('--jar', required=True)
    sp = sub.add_parser('selftest')
    sp.add_argument('issuer'); sp.add_argument('--login', default='alice')
    sp.add_argument('--client-id', default='rp'); sp.add_argument('--client-secret', default=DEFAULT_SECRET)
    sp.add_argument('--redirect-uri', default='http://127.0.0.1:8000/auth/callback')
    sp.add_argument('--post-logout-uri', default='http://127.0.0.1:8000/')
    sp.add_argument('--backchannel-port', type=int)
    a = p.parse_args()
    try:
        if a.cmd == 'login':
            c = Client(a.jar)
            print(login(a.auth_url, a.login, a.password, client=c))
            c.save()
        elif a.cmd == 'logout':
            print(end_session(a.end_session_url, Client(a.jar)))
        else:
            selftest(a)
    except Exception as e:  # one readable line for test logs instead of a traceback
        print(json.dumps({'error': str(e)}), flush=True)
        sys.exit(1)


if __name__ == '__main__':
    main()
