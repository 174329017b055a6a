// A minimal OpenID Connect provider for the benchmark's many logins: bench/scale fills the
// memory store with real sessions by logging in, and the test IdP (oidc-provider, with its
// login and consent pages) manages 100-140 logins a second, so 100k sessions would take a
// quarter of an hour. This one answers the authorization request at once for `login_hint` (or
// `benchuser`), and the token request with an RS256 ID token, so a login costs the sidecar
// what a real one does: discovery and JWKS once, then per login the redirect, PKCE, the code
// exchange, the ID token's signature, nonce and audience checks, and a sealed session.
//
// Not a test IdP: no user interaction, no consent, no refresh, no logout. Node built-ins only.
//   PORT=0 RP_CLIENT_ID=rp RP_CLIENT_SECRET=... node bench/fast_idp.mjs   -> prints "READY <port>"

import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { createServer } from 'node:http';

const CLIENT_ID = process.env.RP_CLIENT_ID ?? 'rp';
const CLIENT_SECRET = process.env.RP_CLIENT_SECRET ?? '';
const CODE_TTL_MS = 60_000;

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const kid = randomBytes(8).toString('hex');
const jwk = { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };

/** code -> what the token request must match, and who logged in. */
const codes = new Map();
let issuer = '';

const b64url = (b) => Buffer.from(b).toString('base64url');

function idToken(user, nonce) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer, sub: user, aud: CLIENT_ID, iat: now, exp: now + 3600, auth_time: now, nonce,
    email: `${user}@example.test`, email_verified: true, name: `Test ${user}`,
    preferred_username: user, given_name: 'Test', family_name: user,
    groups: ['staff', `${user}-group`],
  };
  const input = `${b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid }))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(sign('sha256', Buffer.from(input), privateKey))}`;
}

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(text);
}

function authorize(res, q) {
  const redirect = q.get('redirect_uri') ?? '';
  if (q.get('client_id') !== CLIENT_ID || !/^http:\/\/127\.0\.0\.1:\d+\//.test(redirect)) {
    return send(res, 400, { error: 'invalid_request' });
  }
  if (q.get('response_type') !== 'code' || q.get('code_challenge_method') !== 'S256') {
    return send(res, 400, { error: 'unsupported_response_type' });
  }
  const code = b64url(randomBytes(24));
  codes.set(code, {
    redirect, challenge: q.get('code_challenge'), nonce: q.get('nonce'),
    user: q.get('login_hint') || 'benchuser', expires: Date.now() + CODE_TTL_MS,
  });
  const to = new URL(redirect);
  to.searchParams.set('code', code);
  if (q.has('state')) to.searchParams.set('state', q.get('state'));
  to.searchParams.set('iss', issuer);
  res.writeHead(302, { location: to.toString() });
  res.end();
}

function token(res, req, form) {
  let [id, secret] = [form.get('client_id'), form.get('client_secret')];
  const basic = /^Basic (.+)$/i.exec(req.headers.authorization ?? '');
  if (basic) {
    const pair = Buffer.from(basic[1], 'base64').toString();
    const i = pair.indexOf(':');
    [id, secret] = [decodeURIComponent(pair.slice(0, i)), decodeURIComponent(pair.slice(i + 1))];
  }
  if (id !== CLIENT_ID || secret !== CLIENT_SECRET) return send(res, 401, { error: 'invalid_client' });
  const c = codes.get(form.get('code') ?? '');
  codes.delete(form.get('code') ?? '');
  const verifier = form.get('code_verifier') ?? '';
  if (!c || c.expires < Date.now() || form.get('grant_type') !== 'authorization_code'
      || form.get('redirect_uri') !== c.redirect
      || createHash('sha256').update(verifier).digest('base64url') !== c.challenge) {
    return send(res, 400, { error: 'invalid_grant' });
  }
  send(res, 200, {
    access_token: b64url(randomBytes(32)), token_type: 'Bearer', expires_in: 3600,
    refresh_token: b64url(randomBytes(32)), scope: 'openid email profile offline_access',
    id_token: idToken(c.user, c.nonce),
  });
}

const server = createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (req.method === 'GET' && url.pathname === '/.well-known/openid-configuration') {
    return send(res, 200, {
      issuer, authorization_endpoint: `${issuer}/auth`, token_endpoint: `${issuer}/token`,
      jwks_uri: `${issuer}/jwks`, response_types_supported: ['code'],
      subject_types_supported: ['public'], id_token_signing_alg_values_supported: ['RS256'],
      scopes_supported: ['openid', 'email', 'profile', 'offline_access'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
      code_challenge_methods_supported: ['S256'], grant_types_supported: ['authorization_code'],
    });
  }
  if (req.method === 'GET' && url.pathname === '/jwks') return send(res, 200, { keys: [jwk] });
  if (req.method === 'GET' && url.pathname === '/auth') return authorize(res, url.searchParams);
  if (req.method === 'POST' && url.pathname === '/token') {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => { body += d; if (body.length > 65536) req.destroy(); });
    req.on('end', () => token(res, req, new URLSearchParams(body)));
    return undefined;
  }
  return send(res, 404, { error: 'not_found' });
});

// Codes never redeemed (a login abandoned) are dropped.
setInterval(() => {
  const now = Date.now();
  for (const [k, c] of codes) if (c.expires < now) codes.delete(k);
}, CODE_TTL_MS).unref();

server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}`;
  console.log(`READY ${port}`);
});
