// Headless Chromium: sign in to a relying party, then reach its logout from another origin (the
// IdP's, one click away as a portal's link would be) and press the confirmation page's button.
//
//   node logout.mjs <start-url> <login> <other-origin-url>
//
// Prints one JSON line: {"page": text_of_the_confirmation_page, "after": {url, status},
// "me": status_of_/auth/me_afterwards} (exit 0), or {"error": message, ...} (exit 1).
import { launch, signIn } from './browser.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const OVERALL_MS = 90_000;
const [startUrl, login, otherUrl] = process.argv.slice(2);
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
if (!startUrl || !login || !otherUrl) {
  emit({ error: 'usage: node logout.mjs <start-url> <login> <other-origin-url>' });
  process.exit(2);
}
const rp = new URL(startUrl).origin;
const onRp = (u) => new URL(u).origin === rp;
const profile = mkdtempSync(join(tmpdir(), 'sso-logout-'));
process.on('exit', () => rmSync(profile, { recursive: true, force: true }));

let page;
const text = async () => (page ? page.evaluate(() => document.body?.innerText ?? '').catch(() => '') : '');
const fail = async (message) => {
  emit({ error: message, url: page?.url(), body: (await text()).slice(0, 2000) });
  process.exit(1);
};
setTimeout(() => fail(`timed out after ${OVERALL_MS} ms`), OVERALL_MS).unref();

try {
  const context = await launch(profile);
  page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(10_000);
  await page.goto(startUrl, { waitUntil: 'load' });
  if (!onRp(page.url())) await signIn(page, login, 'test', onRp);
  await page.waitForLoadState('load');

  // A link followed from another origin: not the user's own navigation, so the page asks.
  await page.goto(otherUrl, { waitUntil: 'load' });
  await Promise.all([
    page.waitForURL((u) => onRp(u.toString()) && u.pathname === '/auth/logout'),
    page.evaluate((u) => { window.location.href = u; }, `${rp}/auth/logout`),
  ]);
  await page.waitForLoadState('load');
  const confirmation = await text();

  let after = null;
  page.on('response', (r) => {
    if (r.request().method() === 'POST' && r.url() === `${rp}/auth/logout`) {
      after = { url: r.url(), status: r.status() };
    }
  });
  await Promise.all([
    page.waitForEvent('requestfinished', (r) => r.method() === 'POST'),
    page.click('button[type=submit]'),
  ]);
  await page.waitForLoadState('load').catch(() => {});
  const me = await context.request.get(`${rp}/auth/me`);
  emit({ page: confirmation, after, me: me.status() });
  await context.close();
  process.exit(0);
} catch (err) {
  await fail(err.message.split('\n')[0]);
}
