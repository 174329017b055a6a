// Headless Chromium: the login cases real browsers produce, through a relying party protected by
// the test IdP (server.mjs).
//
//   node tabs.mjs <rp-origin> <login>
//
// 1. Two tabs in one browser open <rp>/one and <rp>/two before either has logged in: two logins
//    in flight at once. Tab one finishes its login, then tab two finishes its own (from the IdP's
//    login form it was left on). Both must land on their pages.
// 2. Back/reload: tab one goes to the callback URL it already used (as Back or a reload does):
//    with its session it must land on /one again. A second browser without that session opening
//    the spent callback URL must get a page with a "Log in again" link, which leads to the IdP.
// Prints one JSON line: {"one": {url, status}, "two": {url, status}, "back": {url, status},
//   "fresh": {status, body, link}, "after_link": url}   exit 0, or {"error": message} exit 1.
import { launch as launchIn, signIn } from './browser.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Two Chromium starts, each allowed 60 s (browser.mjs), and the steps between them.
const OVERALL_MS = 150_000;
const [rp, login] = process.argv.slice(2);
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
if (!rp || !login) {
  emit({ error: 'usage: node tabs.mjs <rp-origin> <login>' });
  process.exit(2);
}
const rpOrigin = new URL(rp).origin;
const onRp = (u) => new URL(u).origin === rpOrigin;
const profiles = [];
process.on('exit', () => profiles.forEach((p) => rmSync(p, { recursive: true, force: true })));
setTimeout(() => { emit({ error: `timed out after ${OVERALL_MS} ms` }); process.exit(1); }, OVERALL_MS).unref();

const launch = async () => {
  const profile = mkdtempSync(join(tmpdir(), 'sso-tabs-'));
  profiles.push(profile);
  return launchIn(profile);
};

// Tracks a page's last main-frame status and the callback URLs it went through.
const track = (page) => {
  const t = { status: null, callbacks: [] };
  page.on('response', (r) => {
    if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) {
      t.status = r.status();
      if (new URL(r.url()).pathname === '/auth/callback') t.callbacks.push(r.url());
    }
  });
  return t;
};

const finishLogin = async (page) => {
  await signIn(page, login, 'test', onRp);
  await page.waitForLoadState('load');
};

try {
  const browser = await launch();
  const one = browser.pages()[0] ?? await browser.newPage();
  const two = await browser.newPage();
  for (const p of [one, two]) p.setDefaultTimeout(10_000);
  const t1 = track(one);
  const t2 = track(two);
  await one.goto(`${rpOrigin}/one`, { waitUntil: 'load' });
  await two.goto(`${rpOrigin}/two`, { waitUntil: 'load' });
  if (onRp(one.url()) || onRp(two.url())) throw new Error('a tab was not sent to the IdP');
  await finishLogin(one);
  await finishLogin(two);
  const result = {
    one: { url: one.url(), status: t1.status },
    two: { url: two.url(), status: t2.status },
  };

  // Back to the spent callback URL, with the session this browser now has.
  const spent = t1.callbacks[0];
  if (!spent) throw new Error('tab one never went through /auth/callback');
  await one.goto(spent, { waitUntil: 'load' });
  result.back = { url: one.url(), status: t1.status };
  await browser.close();

  // Another browser (no session) opening the spent callback URL.
  const other = await launch();
  const page = other.pages()[0] ?? await other.newPage();
  page.setDefaultTimeout(10_000);
  const t3 = track(page);
  await page.goto(spent, { waitUntil: 'load' });
  const link = page.getByRole('link', { name: 'Log in again' });
  result.fresh = {
    status: t3.status,
    body: await page.evaluate(() => document.body?.innerText ?? ''),
    link: await link.getAttribute('href'),
  };
  const before = page.url();
  await Promise.all([page.waitForURL((u) => u.href !== before), link.click()]);
  await page.waitForLoadState('load');
  result.after_link = page.url();
  await other.close();
  emit(result);
  process.exit(0);
} catch (err) {
  emit({ error: err.message.split('\n')[0] });
  process.exit(1);
}
