// What the headless-Chromium scripts (login.mjs, tabs.mjs) share: how Chromium is started, and
// how a user signs in on the test IdP's login form and consent page.
import { chromium } from 'playwright-core';

// Flags from test-infra.md §4: no sandbox (root), and no background traffic leaving the machine.
export const launch = (profile, extraArgs = []) => chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  // Starting Chromium takes seconds on a loaded CI machine (2 cores shared by many tests).
  timeout: 60_000,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage', ...extraArgs],
});

// From the IdP's login form back to the relying party (`onRp(url)`): sign in, and click
// "Continue" on the consent page when the IdP asks for consent.
export const signIn = async (page, login, password, onRp) => {
  await page.locator('input[name=login]').fill(login);
  await page.locator('input[name=password]').fill(password);
  let before = page.url();
  await Promise.all([page.waitForURL((u) => u.href !== before), page.locator('button[type=submit]').click()]);
  if (!onRp(page.url())) {
    const cont = page.locator('button[type=submit]', { hasText: 'Continue' });
    await cont.waitFor();
    before = page.url();
    await Promise.all([page.waitForURL((u) => u.href !== before), cont.click()]);
  }
  await page.waitForURL((u) => onRp(u.href));
};
