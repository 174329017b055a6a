// Headless Chromium: a page on a sibling host (wiki.example.test) tries to act as a user who is
// signed in to the relying party (rag.example.test); then the user's own page does the same.
// Both names resolve to 127.0.0.1 (--host-resolver-rules); they are one site, so the browser
// attaches the SameSite=Lax session cookie to the sibling's requests: what the sidecar refuses.
// Under *.example.localhost (a secure context over http, as localhost is) the browser sends
// Fetch Metadata (Sec-Fetch-*); under *.example.test, plain http, only Origin.
//
//   node cross_site.mjs <rp-origin http://rag.example.test:PORT> <cookie-name> <cookie-value>
//
// The sibling page, served here on a free port: a credentialed no-cors fetch POST, an image, a
// form POST into a frame, a WebSocket; then a link to the relying party, followed. The user's
// own page: a same-origin fetch POST and a WebSocket.
// Prints one JSON line: {"attacks": {...}, "own": {...}, "link": {...}}   exit 0,
//   or {"error": message} exit 1.
import { launch } from './browser.mjs';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const OVERALL_MS = 90_000;
const [rp, name, value] = process.argv.slice(2);
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
if (!rp || !name || !value) {
  emit({ error: 'usage: node cross_site.mjs <rp-origin> <cookie-name> <cookie-value>' });
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), 'sso-xs-'));
process.on('exit', () => rmSync(profile, { recursive: true, force: true }));
setTimeout(() => { emit({ error: `timed out after ${OVERALL_MS} ms` }); process.exit(1); }, OVERALL_MS).unref();

// A WebSocket's fate: "open" or "error" (a refused handshake).
const wsFate = (url) => new Promise((done) => {
  const ws = new WebSocket(url);
  ws.onopen = () => { done('open'); ws.close(); };
  ws.onerror = () => done('error');
});

const server = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><title>wiki</title><body><a id="go">go</a></body>');
});
await new Promise((ready) => server.listen(0, '127.0.0.1', ready));
// The sibling: the relying party's host with its first label replaced.
const wiki = `http://${new URL(rp).hostname.replace(/^[^.]+/, 'wiki')}:${server.address().port}`;

try {
  const ctx = await launch(profile, [
    '--host-resolver-rules=MAP *.example.test 127.0.0.1, MAP *.example.localhost 127.0.0.1',
  ]);
  await ctx.addCookies([{
    name, value, domain: new URL(rp).hostname, path: '/', httpOnly: true, sameSite: 'Lax',
  }]);
  const page = ctx.pages()[0] ?? await ctx.newPage();
  page.setDefaultTimeout(10_000);

  await page.goto(`${wiki}/`);
  const attacks = await page.evaluate(async ({ rp, wsFateSrc }) => {
    const wsFate = eval(wsFateSrc);
    const out = {};
    await fetch(`${rp}/echo/xs-fetch`, { method: 'POST', mode: 'no-cors', credentials: 'include', body: 'x' })
      .then(() => { out.fetch = 'sent'; }, (e) => { out.fetch = `error ${e}`; });
    out.img = await new Promise((done) => {
      const img = new Image();
      img.onload = () => done('load');
      img.onerror = () => done('error');
      img.src = `${rp}/echo/xs-img`;
    });
    out.form = await new Promise((done) => {
      const frame = document.createElement('iframe');
      frame.name = 'target';
      frame.onload = () => done('loaded');
      document.body.appendChild(frame);
      const form = document.createElement('form');
      form.method = 'POST';
      form.action = `${rp}/echo/xs-form`;
      form.target = 'target';
      document.body.appendChild(form);
      form.submit();
    });
    out.ws = await wsFate(`${rp.replace('http', 'ws')}/ws`);
    return out;
  }, { rp, wsFateSrc: wsFate.toString() });

  // A link on the sibling's page, followed by the user: a navigation, which acts as the user.
  await page.evaluate((href) => { document.getElementById('go').href = href; }, `${rp}/echo/xs-link`);
  await Promise.all([page.waitForURL((u) => u.href.startsWith(rp)), page.click('#go')]);
  const link = JSON.parse(await page.locator('body').innerText());

  // The user's own page.
  await page.goto(`${rp}/echo/own-page`);
  const own = await page.evaluate(async (wsFateSrc) => {
    const wsFate = eval(wsFateSrc);
    const r = await fetch('/echo/own-fetch', { method: 'POST', body: 'x' });
    const echoed = await r.json();
    const ws = await wsFate(`${location.origin.replace('http', 'ws')}/ws`);
    return { status: r.status, user: echoed.headers['x-forwarded-user'] ?? null, ws };
  }, wsFate.toString());

  emit({ attacks, link: { user: link.headers['x-forwarded-user'] ?? null }, own });
  await ctx.close();
  server.close();
  process.exit(0);
} catch (e) {
  emit({ error: String(e?.stack ?? e) });
  process.exit(1);
}
