// The fleet overview's alerts column in a real browser: a real `procyon serve
// --no-local` with alert rules made through its API, and three hosts uploading
// full-format snapshots of this machine (as agents' REST fallback sends them). Two
// rules that always hold on web-2 (CPU and memory at or above 0 %) fire as its
// snapshots arrive; the overview must show 2 on web-2's row and 0 on the others, keep
// only web-2 under the filter word `alerting`, sort it first by the column, and show
// the count fall to 0 when the rules, and so their alerts, are deleted.
//
//   cargo build && (cd ui && npm run build) && node --test tests/browser/fleet_alerts.test.mjs
//
// Screenshots go to artifacts/fleet-alerts-*.png (gitignored).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, launchChromium, procyonBin, startCollector, upload, waitFor } from './harness.mjs';

const ARTIFACTS = join(ROOT, 'artifacts');
const HOSTS = ['web-1', 'web-2', 'web-3'];

let collector;
let chromium;
let key;
let token;
let template;
let seq = 0;
let feeding;
const problems = [];

async function shot(page, label) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `fleet-alerts-${label}.png`) });
}

async function api(method, path, body) {
  const r = await fetch(`${collector.base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: r.status === 204 ? null : await r.json() };
}

/** One snapshot of every host, each a new `seq`. */
async function feed() {
  seq += 1;
  for (const hostname of HOSTS) {
    await upload(collector.base, key, {
      ...template,
      host: { ...template.host, hostname, id: hostname },
      seq,
      taken_at: new Date().toISOString(),
    });
  }
}

before(async () => {
  assert.ok(existsSync(join(ROOT, 'ui/dist/index.html')), 'ui/dist is missing: run `npm run build` in ui/');
  collector = await startCollector({ args: ['--no-local'] });
  key = collector.cli(['apikey', 'create', '--name', 'fleet-alerts']).trim().split('\n').pop().trim();
  token = await collector.login('admin', collector.adminPassword);
  const real = JSON.parse(execFileSync(procyonBin(), ['snapshot'], { encoding: 'utf8', maxBuffer: 64 << 20 }));
  const processes = real.processes
    .filter((p) => !p.kernel_thread)
    .slice(0, 25)
    .map((p) => ({ ...p, cmd: p.cmd.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, 200) }));
  template = { ...real, processes, connections: real.connections.slice(0, 20) };
  for (const [name, metric] of [
    ['web-2 busy', 'host.cpu_percent'],
    ['web-2 memory', 'host.memory_percent'],
  ]) {
    const made = await api('POST', '/api/alert-rules', { name, metric, host: 'web-2', op: '>=', threshold: 0, for_secs: 0 });
    assert.equal(made.status, 201, JSON.stringify(made.body));
  }
  await feed();
  // Hosts stay online while they upload: a snapshot of each every 2 s.
  feeding = setInterval(() => void feed().catch((e) => problems.push(`upload: ${e.message}`)), 2000);
  chromium = await launchChromium();
});

after(async () => {
  clearInterval(feeding);
  for (const step of [() => chromium?.close(), () => collector?.stop()]) {
    try {
      await step();
    } catch (e) {
      console.error('cleanup:', e);
    }
  }
});

const cell = (page, host) => page.locator(`[data-testid=fleet-table] .frow[data-host="${host}"] [data-testid=fleet-alerts]`);
const hostsShown = (page) =>
  page.$$eval('[data-testid=fleet-table] .frow', (rows) =>
    rows
      .map((r) => ({ host: r.dataset.host, top: r.parentElement.getBoundingClientRect().top }))
      .sort((a, b) => a.top - b.top)
      .map((r) => r.host),
  );

test('the fleet overview counts the alerts firing on each host', { timeout: 180_000 }, async (t) => {
  const context = await chromium.browser.newContext({ viewport: { width: 1400, height: 600 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

  await t.test('the firing alerts are counted per host', async () => {
    const firing = await waitFor('two alerts firing on web-2', async () => {
      const alerts = (await api('GET', '/api/alerts')).body.filter((a) => a.state === 'firing');
      return alerts.length === 2 && alerts;
    });
    assert.deepEqual(
      firing.map((a) => a.hostname),
      ['web-2', 'web-2'],
    );
    await page.goto(`${collector.base}/`);
    await page.fill('input[name=username]', 'admin');
    await page.fill('input[name=password]', collector.adminPassword);
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-testid=fleet-table] .frow', { timeout: 30_000 });
    await waitFor('web-2 shows 2', async () => (await cell(page, 'web-2').textContent()).trim() === '2', 20_000);
    assert.equal((await cell(page, 'web-1').textContent()).trim(), '0');
    assert.equal((await cell(page, 'web-3').textContent()).trim(), '0');
    // The same count as the top bar's badge.
    assert.equal((await page.textContent('[aria-label="2 firing"]')).trim(), '2');
    await shot(page, 'column');
  });

  await t.test('the word alerting keeps the hosts with one firing', async () => {
    await page.fill('[data-testid=fleet-filter]', 'alerting');
    await waitFor('web-2 only', async () => JSON.stringify(await hostsShown(page)) === '["web-2"]');
    await page.fill('[data-testid=fleet-filter]', '!alerting');
    await waitFor('the others', async () => JSON.stringify(await hostsShown(page)) === '["web-1","web-3"]');
    await page.fill('[data-testid=fleet-filter]', '');
  });

  await t.test('the column sorts', async () => {
    await page.click('[data-testid=fleet-table] [data-column=alerts]');
    await waitFor('web-2 first', async () => (await hostsShown(page))[0] === 'web-2');
    const dir = await page.getAttribute('[data-testid=fleet-table] [role=columnheader]:has([data-column=alerts])', 'aria-sort');
    await page.click('[data-testid=fleet-table] [data-column=alerts]');
    await waitFor('web-2 last', async () => (await hostsShown(page)).at(-1) === 'web-2');
    assert.ok(['ascending', 'descending'].includes(dir));
    await shot(page, 'sorted');
  });

  await t.test('alerts of deleted rules leave the count', async () => {
    for (const name of ['web-2 busy', 'web-2 memory']) {
      assert.equal((await api('DELETE', `/api/alert-rules/${encodeURIComponent(name)}`)).status, 204);
    }
    await waitFor('web-2 shows 0', async () => (await cell(page, 'web-2').textContent()).trim() === '0', 30_000);
    await shot(page, 'resolved');
  });

  assert.deepEqual(problems, []);
  await context.close();
});
