// Headless Chromium login through a relying party protected by the test IdP (server.mjs).
//
//   node login.mjs <start-url> <login> [--password PW] [--screenshot file.png]
//
// Opens <start-url> (a protected page on the RP) in a fresh profile, signs in on the IdP's
// devInteractions login form, clicks "Continue" on the consent page, waits until the browser is back
// on <start-url>'s origin and the page has loaded, then prints one JSON line to stdout:
//   {"url": final_url, "status": http_status, "body": page_text}            exit 0
//   {"error": message, "url": url_at_failure, "body": page_text_excerpt}    exit 1
// Everything is bounded by a 90 s overall deadline (Chromium alone may take up to 60 s to start).
import { launch, signIn } from './browser.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const OVERALL_MS = 90_000;
const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i < 0 ? undefined : args.splice(i, 2)[1];
};
const screenshot = opt('--screenshot');
const password = opt('--password') ?? 'test';
const [startUrl, login] = args;
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
if (!startUrl || !login) {
  emit({ error: 'usage: node login.mjs <start-url> <login> [--password PW] [--screenshot file.png]' });
  process.exit(2);
}
const startOrigin = new URL(startUrl).origin;
const onRp = (u) => new URL(u).origin === startOrigin;

const profile = mkdtempSync(join(tmpdir(), 'sso-login-'));
// Runs on every exit path, including the deadline below; Playwright kills the browser on exit.
process.on('exit', () => rmSync(profile, { recursive: true, force: true }));

let context;
let page;
const pageText = async () => (page ? page.evaluate(() => document.body?.innerText ?? '').catch(() => '') : '');
const fail = async (message) => {
  const url = page?.url();
  const body = (await pageText()).slice(0, 2000);
  if (screenshot && page) await page.screenshot({ path: screenshot }).catch(() => {});
  emit({ error: message, url, body });
  process.exit(1);
};
// A hard deadline even if a Playwright call hangs (e.g. the browser never starts).
setTimeout(() => fail(`timed out after ${OVERALL_MS} ms`), OVERALL_MS).unref();

try {
  context = await launch(profile);
  page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(10_000);

  // Status of the last main-frame document; redirects (302/303) are superseded by the final page.
  let status = null;
  page.on('response', (r) => {
    if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) status = r.status();
  });

  await page.goto(startUrl, { waitUntil: 'load' });
  if (!onRp(page.url())) await signIn(page, login, password, onRp);
  await page.waitForLoadState('load');
  const result = { url: page.url(), status, body: await pageText() };
  if (screenshot) await page.screenshot({ path: screenshot });
  await context.close();
  emit(result);
  process.exit(0);
} catch (err) {
  await fail(err.message.split('\n')[0]);
}
