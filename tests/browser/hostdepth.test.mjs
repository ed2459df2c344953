// The host in depth on the overview, in a real browser: a real `procyon serve` samples
// its own machine, and Debian's Chromium shows the filesystems card with this machine's
// root filesystem, its share in use as `statfs` gives it (what `df` prints), and the
// disk I/O card. The history shows the disk I/O and temperature charts. Screenshots go
// to artifacts/hostdepth.png and artifacts/hostdepth-history.png.
//
//   cargo build && (cd ui && npm run build) && node --test tests/browser/hostdepth.test.mjs

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, launchChromium, startCollector, waitFor } from './harness.mjs';

const ARTIFACTS = join(ROOT, 'artifacts');

let collector;
let chromium;

before(async () => {
  assert.ok(existsSync(join(ROOT, 'ui/dist/index.html')), 'ui/dist is missing: run `npm run build` in ui/');
  collector = await startCollector({ args: ['--interval', '1'] });
  chromium = await launchChromium();
});

after(async () => {
  for (const step of [() => chromium?.close(), () => collector?.stop()]) {
    try {
      await step();
    } catch (e) {
      console.error('cleanup:', e);
    }
  }
});

/** `/`'s share in use as `df` counts it: used / (used + available to users). */
function rootUsedPercent() {
  const s = statfsSync('/');
  const used = (s.blocks - s.bfree) * s.bsize;
  const avail = s.bavail * s.bsize;
  return (used / (used + avail)) * 100;
}

test('the overview shows this machine\'s filesystems and disks', { timeout: 120_000 }, async () => {
  const context = await chromium.browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: 'light' });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${collector.base}/`);
  await page.fill('input[name=username]', 'admin');
  await page.fill('input[name=password]', collector.adminPassword);
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=overview]', { timeout: 20_000 });

  // The root filesystem, with a bar filled to its share in use.
  const root = page.locator('[data-testid=card-filesystems] [data-testid=filesystem][data-mount="/"]');
  await root.waitFor({ timeout: 30_000 }).catch(async (e) => {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "hostdepth-failed.png") });
    throw e;
  });
  const shown = Number(await root.locator('[role=meter]').getAttribute('aria-valuenow'));
  const real = rootUsedPercent();
  assert.ok(Math.abs(shown - real) <= 2, `root shown ${shown}% used, statfs says ${real.toFixed(1)}%`);
  const text = await root.textContent();
  assert.match(text, new RegExp(`${Math.round(shown)}%`), text);
  const bar = await root.locator('.fill').evaluate((el) => getComputedStyle(el).transform);
  assert.notEqual(bar, 'none', 'the bar is drawn to scale');
  // Pseudo filesystems are not there.
  const mounts = await page.locator('[data-testid=card-filesystems] [data-testid=filesystem]').evaluateAll((rows) => rows.map((r) => r.dataset.mount));
  for (const pseudo of ['/proc', '/sys', '/dev', '/dev/shm', '/run']) assert.ok(!mounts.includes(pseudo), `${pseudo} is left out: ${mounts}`);

  // Still there once the live stream has moved on by deltas (they carry the host in
  // depth only when it changed, so a dashboard that dropped it would lose the card).
  // The explorer's `.when` shows the snapshot's time (its title, to the millisecond).
  const seqNow = async () => (await page.getAttribute('.when', 'title').catch(() => '')) ?? '';
  const first = await seqNow();
  await waitFor('a few live updates', async () => {
    const now = await seqNow();
    return now !== '' && now !== first;
  }, 30_000);
  await page.waitForTimeout(3_000);
  assert.equal(await root.count(), 1, 'the root filesystem stays after live deltas');

  // Disk I/O is measured from the second snapshot on.
  await waitFor('the disk I/O card', async () => (await page.locator('[data-testid=card-disks]').count()) === 1, 20_000);
  assert.match(await page.textContent('[data-testid=card-disks]'), /read/);

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'hostdepth.png') });

  // The history has the charts of disk I/O and temperature (on a machine without
  // sensors, the temperature chart says so).
  await page.click('nav a:has-text("History")');
  await waitFor('a disk I/O chart with data', async () => Number(await page.getAttribute('[data-testid=chart-disk]', 'data-points').catch(() => 0)) >= 2, 30_000);
  await page.waitForSelector('[data-testid=chart-temperature], [data-testid=chart-temperature-unknown]', { timeout: 20_000 });
  await page.locator('[data-testid=chart-disk]').scrollIntoViewIfNeeded();
  await page.waitForTimeout(800);
  await page.screenshot({ path: join(ARTIFACTS, 'hostdepth-history.png') });
  assert.deepEqual(errors, []);
  await context.close();
});
