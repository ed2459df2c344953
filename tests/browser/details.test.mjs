// The process drawer's "In depth" part in a real browser: a real `procyon serve`, a real
// child process with four threads and a file it holds open, and Debian's Chromium.
// The drawer reads the child's details when it opens; its threads and its open file
// show, and a screenshot goes to artifacts/details.png.
//
//   cargo build && (cd ui && npm run build) && node --test tests/browser/details.test.mjs

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, launchChromium, startCollector, waitFor } from './harness.mjs';

const ARTIFACTS = join(ROOT, 'artifacts');
/** The child's threads: its main thread and three more. */
const THREADS = 4;

let collector;
let chromium;
let child;
let dir;
let heldFile;

before(async () => {
  assert.ok(existsSync(join(ROOT, 'ui/dist/index.html')), 'ui/dist is missing: run `npm run build` in ui/');
  collector = await startCollector({ args: ['--interval', '1'] });
  dir = mkdtempSync(join(tmpdir(), 'procyon-details-'));
  heldFile = join(dir, 'held-by-the-child.txt');
  writeFileSync(heldFile, 'held');
  const script = [
    'import sys, threading, time',
    'held = open(sys.argv[1])',
    'stop = threading.Event()',
    `for _ in range(${THREADS - 1}): threading.Thread(target=stop.wait, daemon=True).start()`,
    'print("ready", flush=True)',
    'time.sleep(600)',
  ].join('\n');
  child = spawn('python3', ['-c', script, heldFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((ok, fail) => {
    child.stdout.once('data', () => ok());
    child.once('exit', () => fail(new Error('the child did not start')));
  });
  chromium = await launchChromium();
});

after(async () => {
  for (const step of [() => chromium?.close(), () => child?.kill('SIGKILL'), () => collector?.stop(), () => dir && rmSync(dir, { recursive: true, force: true })]) {
    try {
      await step();
    } catch (e) {
      console.error('cleanup:', e);
    }
  }
});

test('the drawer shows a real process in depth', { timeout: 120_000 }, async () => {
  const context = await chromium.browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: 'light' });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${collector.base}/`);
  await page.fill('input[name=username]', 'admin');
  await page.fill('input[name=password]', collector.adminPassword);
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=process-table] .prow', { timeout: 20_000 });

  await page.fill('[data-testid=process-search]', String(child.pid));
  const row = page.locator(`[data-testid=process-table] .prow[data-pid="${child.pid}"]`);
  await row.waitFor({ timeout: 20_000 });
  await row.click();
  await page.waitForSelector('[data-testid=process-drawer]');

  // Threads: one row each, the main thread's tid being the pid.
  const threads = page.locator('[data-testid=depth-threads] tbody tr');
  await waitFor('the threads', async () => (await threads.count()) === THREADS, 20_000);
  const tids = await threads.evaluateAll((rows) => rows.map((r) => Number(r.cells[0].textContent)));
  assert.ok(tids.includes(child.pid), `the main thread is listed: ${tids}`);

  // The file it holds open, by its path.
  const files = await page.textContent('[data-testid=depth-files]');
  assert.ok(files.includes(heldFile), `the held file is listed: ${files}`);
  assert.match(await page.textContent('[data-testid=depth-limits]'), /open files/);
  assert.ok((await page.textContent('[data-testid=depth-exe]')).includes('python'));

  // Scrolled so the part shows, for a person to look at.
  await page.locator('[data-testid=process-depth]').scrollIntoViewIfNeeded();
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'details.png') });

  // The process ends: "Refresh" says it is gone instead of showing stale details.
  child.kill('SIGKILL');
  await new Promise((ok) => child.once('exit', ok));
  await page.click('[data-testid=depth-refresh]').catch(() => {});
  await waitFor(
    'the gone process said so, or the drawer shows it exited',
    async () => {
      const error = page.locator('[data-testid=depth-error]');
      if ((await error.count()) > 0) return /gone/.test(await error.textContent());
      return (await page.textContent('[data-testid=process-depth]')).includes('running process only');
    },
    20_000,
  );
  assert.deepEqual(errors, []);
  await context.close();
});
