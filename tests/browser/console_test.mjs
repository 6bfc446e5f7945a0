// The operator console in a real browser: headless Chromium (Debian's) driven by playwright-core.
// Run by tests/console/browser_pgtest.cpp, which starts `bankworker run` on a scratch database with
// a tenant named <script>…</script>, a dead job of it and an operator, and passes them here:
//   CONSOLE_URL, OPERATOR, PASSWORD, JOB_ID, TENANT_ID, TENANT_NAME, WORKER_PID, OUTPUT_DIR, CHROMIUM.
// Signs in, finds the dead job, opens it, retries it, sees it available, opens the tenant's audit
// page, and checks that the CSP blocks an inline script injected into a page. Saves a screenshot
// of each page in OUTPUT_DIR. Prints one line per step; exits 1 at the first failed check.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env('CONSOLE_URL');
const jobId = env('JOB_ID');
const tenantId = env('TENANT_ID');
const tenantName = env('TENANT_NAME');
const workerPid = env('WORKER_PID');
const outputDir = env('OUTPUT_DIR');
mkdirSync(outputDir, { recursive: true });

const check = (condition, what) => {
  if (!condition) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
};

const profile = mkdtempSync(join(tmpdir(), 'bankworker-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 900 },
});
let failed = false;
try {
  const page = context.pages()[0] ?? await context.newPage();
  const shot = async (name) => {
    await page.screenshot({ path: join(outputDir, `${name}.png`), fullPage: true });
    console.log(`screenshot: ${join(outputDir, name)}.png`);
  };
  const main = () => page.locator('main').innerText();

  await page.goto(`${base}/console/`);
  check(new URL(page.url()).pathname === '/console/login', 'an unsigned browser is sent to the login page');
  await shot('01-login');
  await page.fill('input[name=name]', env('OPERATOR'));
  await page.fill('input[name=password]', env('PASSWORD'));
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  check(new URL(page.url()).pathname === '/console/', 'signing in lands on the overview');
  check((await main()).includes('plaid.sync'), 'the overview counts the dead plaid.sync job');
  const processRow = page.locator('main tr', { hasText: 'alive' }).filter({ has: page.locator(`td:text-is("${workerPid}")`) });
  check(await processRow.count() === 1, `the overview lists the worker process ${workerPid} as alive`);
  await shot('02-overview');

  await page.goto(`${base}/console/jobs?state=dead`);
  check((await main()).includes(jobId), `the dead jobs list shows job ${jobId}`);
  await shot('03-jobs-dead');
  await Promise.all([page.waitForNavigation(), page.click(`a[href="/console/jobs/${jobId}"]`)]);
  const detail = await main();
  check(detail.includes('failed'), 'the job page says the job is failed (dead)');
  check(detail.includes(tenantName), 'the tenant named like a script tag shows as text');
  check(await page.evaluate(() => window.__bankworker_pwned === undefined), 'the tenant name did not run as script');
  await shot('04-job-dead');

  // An inline script put into the page (as a forgotten escape would) is refused by the CSP.
  const violation = await page.evaluate(() => new Promise((resolve) => {
    document.addEventListener('securitypolicyviolation', (e) => resolve(e.effectiveDirective), { once: true });
    const script = document.createElement('script');
    script.textContent = 'window.__bankworker_injected = true;';
    document.body.appendChild(script);
    setTimeout(() => resolve('no violation reported'), 3000);
  }));
  check(violation.startsWith('script-src'), `the CSP reports the injected inline script (${violation})`);
  check(await page.evaluate(() => window.__bankworker_injected === undefined), 'the injected inline script did not run');

  await Promise.all([page.waitForNavigation(), page.click(`button:has-text("Retry job ${jobId}")`)]);
  check(new URL(page.url()).pathname === `/console/jobs/${jobId}`, 'retrying returns to the job page');
  const retried = await main();
  check(/State\s+available/.test(retried), 'the retried job is available');
  await shot('05-job-retried');

  await page.goto(`${base}/console/audit?tenant=${tenantId}`);
  check((await main()).includes('rows verified'), "the tenant's audit chain verifies");
  await shot('06-audit');

  // A form posted without the session's CSRF token is refused.
  const forged = await page.evaluate(async (id) => {
    const answer = await fetch(`/console/jobs/${id}/cancel`, { method: 'POST', body: 'csrf=forged',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }).catch(() => null);
    return answer ? answer.status : 0;
  }, jobId);
  // fetch() from the page is itself a script: the CSP's connect-src 'none' (default-src) stops it, or
  // the server answers 403. Either way nothing changes.
  check(forged === 0 || forged === 403, `a forged POST is stopped (${forged === 0 ? 'by the CSP' : '403'})`);
  await page.goto(`${base}/console/jobs/${jobId}`);
  check(/State\s+available/.test(await main()), 'the forged cancel changed nothing');
} catch (error) {
  failed = true;
  console.log(String(error && error.stack || error));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(failed ? 'browser test FAILED' : 'browser test passed');
process.exit(failed ? 1 : 0);
