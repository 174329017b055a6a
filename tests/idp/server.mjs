// Test-only OpenID Provider for sso-sidecar's tests (oidc-provider 9.x). Never use in production:
// any login/password is accepted, state is in memory, keys and secrets are throwaway test values.
//
// stdout carries exactly one line, `READY <port>`, once the provider answers; everything else goes
// to stderr so a test harness can read the port without parsing logs. See README.md for env vars.
import http from 'node:http';
import crypto from 'node:crypto';
import { promisify } from 'node:util';

// oidc-provider prints NOTICEs with console.info (stdout); keep stdout for the READY line only.
for (const m of ['log', 'info', 'debug']) console[m] = (...a) => console.error(...a);

const env = process.env;
const num = (name, dflt) => {
  const v = env[name] === undefined || env[name] === '' ? dflt : Number(env[name]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a non-negative number`);
  return v;
};
const list = (name, dflt) => (env[name] ?? dflt).split(',').map((s) => s.trim()).filter(Boolean);
const json = (name, dflt) => {
  if (!env[name]) return dflt;
  try { return JSON.parse(env[name]); } catch (e) { throw new Error(`${name}: invalid JSON: ${e.message}`); }
};

const TTL = {
  AccessToken: num('ACCESS_TOKEN_TTL', 3600),
  IdToken: num('ID_TOKEN_TTL', 3600),
  RefreshToken: num('REFRESH_TOKEN_TTL', 86400),
  Session: num('SESSION_TTL', 86400),
};
const ACCOUNTS = json('ACCOUNTS_JSON', {});

const defaultClient = {
  client_id: 'rp',
  client_secret: 'rp-secret-0123456789-0123456789-0123',
  token_endpoint_auth_method: 'client_secret_basic',
  redirect_uris: list('RP_REDIRECT_URIS', 'http://127.0.0.1:8000/auth/callback'),
  post_logout_redirect_uris: list('RP_POST_LOGOUT_URIS', 'http://127.0.0.1:8000/'),
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  scope: 'openid email profile offline_access',
  ...(env.RP_BACKCHANNEL_URI ? { backchannel_logout_uri: env.RP_BACKCHANNEL_URI } : {}),
  backchannel_logout_session_required: true,
};
const clients = [...json('CLIENTS_JSON', [defaultClient]), ...json('EXTRA_CLIENTS_JSON', [])];

// Key generation happens before oidc-provider is imported: generating synchronously during its
// start-up hung node 20 about one start in ten (test-infra.md §3).
const { privateKey } = await promisify(crypto.generateKeyPair)('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }), kid: `test-${crypto.randomBytes(6).toString('hex')}`, use: 'sig', alg: 'RS256',
};
const { default: Provider } = await import('oidc-provider');

// Own in-memory adapter (instead of the built-in one) so /__test/revoke-grants can find every
// grant of an account. One Map per model; entries expire like the real adapter's would.
const stores = new Map(); // model -> Map(id -> { payload, expiresAt })
const grantsBySub = new Map(); // accountId -> Set(grantId)
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);
class TestAdapter {
  constructor(model) {
    this.model = model;
    if (!stores.has(model)) stores.set(model, new Map());
    this.store = stores.get(model);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    this.store.set(id, { payload, expiresAt });
    const grantId = this.model === 'Grant' ? id : payload.grantId;
    if (payload.accountId && grantId) {
      if (!grantsBySub.has(payload.accountId)) grantsBySub.set(payload.accountId, new Set());
      grantsBySub.get(payload.accountId).add(grantId);
    }
  }

  async find(id) {
    const e = this.store.get(id);
    if (!e) return undefined;
    if (e.expiresAt <= Date.now()) { this.store.delete(id); return undefined; }
    return e.payload;
  }

  async #findBy(field, value) {
    for (const [id, e] of this.store) if (e.payload[field] === value) return this.find(id);
    return undefined;
  }

  findByUid(uid) { return this.#findBy('uid', uid); }

  findByUserCode(userCode) { return this.#findBy('userCode', userCode); }

  async consume(id) {
    const e = this.store.get(id);
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { this.store.delete(id); }

  async revokeByGrantId(grantId) { dropGrant(this.store, grantId); }
}

const dropGrant = (store, grantId) => {
  let n = 0;
  for (const [id, e] of store) if (e.payload.grantId === grantId) { store.delete(id); n += 1; }
  return n;
};

// Remove every token of every grant of `sub`, plus the Grant records, so that the next refresh
// gets invalid_grant and the next authorization needs consent again. The IdP session is kept.
function revokeGrantsOf(sub) {
  const grantIds = [...(grantsBySub.get(sub) ?? [])];
  let records = 0;
  for (const grantId of grantIds) {
    for (const model of GRANTABLE) if (stores.has(model)) records += dropGrant(stores.get(model), grantId);
    if (stores.get('Grant')?.delete(grantId)) records += 1;
  }
  grantsBySub.delete(sub);
  return { revoked: grantIds.length, records };
}

function accountClaims(id) {
  const claims = {
    sub: id,
    email: `${id}@example.test`,
    email_verified: true,
    name: `Test ${id}`,
    preferred_username: id,
    given_name: 'Test',
    family_name: id,
    groups: ['staff', `${id}-group`],
    ...(ACCOUNTS[id] ?? {}),
  };
  // ACCOUNTS_JSON may set a claim to null to drop it (e.g. an account without email).
  for (const k of Object.keys(claims)) if (claims[k] === null) delete claims[k];
  claims.sub = id; // sub must stay the login: the sidecar's session keys on it
  return claims;
}

const events = { grants: { authorization_code: 0, refresh_token: 0 }, grant_errors: {}, backchannel: [] };

// Listen first so the issuer can carry the real port when PORT=0.
const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(num('PORT', 0), '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = env.ISSUER || `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  adapter: TestAdapter,
  clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  findAccount: (ctx, id) => ({ accountId: id, claims: () => accountClaims(id) }),
  scopes: ['openid', 'email', 'profile', 'offline_access'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'given_name', 'family_name', 'groups'],
  },
  // Otherwise scope claims go only to userinfo for response_type=code; the sidecar reads the id_token.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
  },
  pkce: { required: (ctx, client) => client.clientAuthMethod === 'none' }, // 9.x accepts S256 only
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token')
    && code.scopes.has('offline_access'),
  ...(env.ROTATE_REFRESH_TOKENS === '1' ? { rotateRefreshToken: () => true } : {}),
  ttl: { ...TTL, Grant: Math.max(TTL.RefreshToken, TTL.Session) },
  // oidc-provider's SSRF guard (its undici `dispatcher`) refuses loopback targets, which would make
  // every back-channel logout to a test RP on 127.0.0.1 fail; drop it.
  fetch: (url, { dispatcher, ...options }) => globalThis.fetch(url, options),
});

provider.on('grant.success', (ctx) => {
  const t = ctx.oidc.params.grant_type;
  events.grants[t] = (events.grants[t] ?? 0) + 1;
});
provider.on('grant.error', (ctx, err) => {
  const t = ctx.oidc?.params?.grant_type ?? 'unknown';
  events.grant_errors[t] = (events.grant_errors[t] ?? 0) + 1;
  console.error(`grant.error ${t}: ${err.message} ${err.error_description ?? ''}`);
});
provider.on('backchannel.success', (ctx, client, accountId, sid) => {
  events.backchannel.push({ ok: true, client: client.clientId, sub: accountId, sid });
});
provider.on('backchannel.error', (ctx, err, client, accountId, sid) => {
  events.backchannel.push({ ok: false, client: client.clientId, sub: accountId, sid, error: err.message });
  console.error(`backchannel.error ${client.clientId}: ${err.message}`);
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const oidc = provider.callback();
const reply = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
};
server.on('request', (req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (!url.pathname.startsWith('/__test/')) return oidc(req, res);
  if (req.method === 'GET' && url.pathname === '/__test/events') return reply(res, 200, events);
  if (req.method === 'POST' && url.pathname === '/__test/revoke-grants') {
    const sub = url.searchParams.get('sub');
    if (!sub) return reply(res, 400, { error: 'sub query parameter required' });
    return reply(res, 200, revokeGrantsOf(sub));
  }
  if (req.method === 'POST' && url.pathname === '/__test/account') {
    // Merges a JSON object into one account's claims (as ACCOUNTS_JSON would have set them):
    // the next token the IdP issues (a refresh included) carries them.
    const sub = url.searchParams.get('sub');
    if (!sub) return reply(res, 400, { error: 'sub query parameter required' });
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      try {
        ACCOUNTS[sub] = { ...(ACCOUNTS[sub] ?? {}), ...JSON.parse(body) };
        reply(res, 200, ACCOUNTS[sub]);
      } catch (e) {
        reply(res, 400, { error: `invalid JSON: ${e.message}` });
      }
    });
    return undefined;
  }
  return reply(res, 404, { error: 'unknown test endpoint' });
});

console.error(`test IdP: issuer ${issuer}, clients ${clients.map((c) => c.client_id).join(',')}, kid ${signingKey.kid}`);
process.stdout.write(`READY ${port}\n`);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
