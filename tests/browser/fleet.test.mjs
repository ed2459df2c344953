// The fleet overview in a real browser: a real `procyon serve --no-local` fed 1,000
// simulated hosts (full-format snapshots of this machine, uploaded as agents' REST
// fallback sends them, each host with its own CPU figure), with labels set through the
// admin API; Debian's Chromium signs in at the front door and must land on the
// overview, list the hosts in natural order, sort them by CPU, filter them by a label
// and a figure, follow a live change, open a host, and compare hosts chosen by label.
//
//   cargo build && (cd ui && npm run build) && node --test tests/browser/fleet.test.mjs
//
// Screenshots go to artifacts/fleet-*.png (gitignored).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, launchChromium, procyonBin, startCollector, upload, waitFor } from './harness.mjs';

const ARTIFACTS = join(ROOT, 'artifacts');
const HOSTS = 1000;
const name = (i) => `web-${i}`;
/** A CPU figure per host, spread so that sorting means something: host 777 is the
 *  busiest, host 5 the idlest. */
const cpuOf = (i) => (i === 777 ? 97.5 : i === 5 ? 0.5 : 5 + ((i * 37) % 80));
const envOf = (i) => (i % 4 === 0 ? 'prod' : 'staging');

let collector;
let chromium;
let key;
let template;
const problems = [];

async function shot(page, label) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `fleet-${label}.png`) });
}

function snapshotOf(i, seq, cpu) {
  return {
    ...template,
    host: { ...template.host, hostname: name(i), id: name(i) },
    seq,
    taken_at: new Date().toISOString(),
    cpu: { ...template.cpu, total_percent: cpu },
  };
}

/** Runs `fn` over `items`, `width` at a time. */
async function pool(items, width, fn) {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

before(async () => {
  assert.ok(existsSync(join(ROOT, 'ui/dist/index.html')), 'ui/dist is missing: run `npm run build` in ui/');
  const bin = procyonBin();
  collector = await startCollector({ args: ['--no-local'] });
  key = collector.cli(['apikey', 'create', '--name', 'fleet']).trim().split('\n').pop().trim();
  // One real snapshot of this machine, cut to a few processes: a thousand hosts of it.
  const real = JSON.parse(execFileSync(bin, ['snapshot'], { encoding: 'utf8', maxBuffer: 64 << 20 }));
  const processes = real.processes
    .filter((p) => !p.kernel_thread)
    .slice(0, 25)
    // Calmer than the hot worker whatever this machine is doing now (a build's
    // compiler at 190 % would otherwise be every host's busiest process).
    .map((p) => ({ ...p, cmd: p.cmd.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, 200), cpu_percent: Math.min(p.cpu_percent ?? 0, 50) }));
  processes[0] = { ...processes[0], name: 'hot-worker', cpu_percent: 180 };
  template = { ...real, processes, connections: real.connections.slice(0, 20) };
  const ids = Array.from({ length: HOSTS }, (_, i) => i + 1);
  await pool(ids, 16, (i) => upload(collector.base, key, snapshotOf(i, 1, cpuOf(i))));
  // Labels through the admin API, as an admin sets them: a few at a time (each is a
  // write and an audit row, and admins do not edit a thousand hosts at once).
  const token = await collector.login('admin', collector.adminPassword);
  await pool(ids, 3, async (i) => {
    const r = await fetch(`${collector.base}/api/hosts/${name(i)}/labels`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ labels: { env: envOf(i), rack: `r${i % 10}` } }),
    });
    if (r.status !== 200) throw new Error(`labels of ${name(i)}: ${r.status} ${await r.text()}`);
  });
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

const hostsShown = (page) =>
  page.$$eval('[data-testid=fleet-table] .frow', (rows) =>
    rows
      .map((r) => ({ host: r.dataset.host, top: r.parentElement.getBoundingClientRect().top }))
      .sort((a, b) => a.top - b.top)
      .map((r) => r.host),
  );

test('the fleet overview with 1,000 hosts', { timeout: 300_000 }, async (t) => {
  const context = await chromium.browser.newContext({ viewport: { width: 1400, height: 820 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

  await t.test('lands on the overview with every host, in natural order, windowed', async () => {
    await page.goto(`${collector.base}/`);
    await page.fill('input[name=username]', 'admin');
    await page.fill('input[name=password]', collector.adminPassword);
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-testid=fleet-table] .frow', { timeout: 30_000 });
    assert.match(page.url(), /#\/fleet/, 'the front door of a fleet is the overview');
    await waitFor('all hosts counted', async () => (await page.textContent('[data-testid=fleet-counts]')).includes(`${HOSTS} hosts`));
    const shown = await hostsShown(page);
    assert.deepEqual(shown.slice(0, 12), Array.from({ length: 12 }, (_, i) => name(i + 1)), 'web-2 before web-10');
    const inDom = await page.locator('[data-testid=fleet-table] .frow').count();
    assert.ok(inDom < 80, `only the rows in view exist (${inDom} of ${HOSTS})`);
    // Figures, a sparkline-ready trend and labels are drawn.
    const first = page.locator('[data-testid=fleet-table] .frow[data-host="web-1"]');
    assert.equal(await first.getAttribute('data-cpu'), String(cpuOf(1)));
    assert.match(await first.textContent(), /hot-worker/);
    assert.match(await first.textContent(), /env=staging/);
    await waitFor('the fleet stream', async () => (await page.textContent('[data-testid=live-state]')).includes('Live'), 30_000);
    await shot(page, 'overview');
  });

  await t.test('the host picker lists hosts in natural order too', async () => {
    // Online hosts first (uploading a thousand takes longer than a host stays online
    // here, so both kinds are listed), each part in natural order.
    await page.click('[data-testid=host-picker]');
    const options = await page.$$eval('[role=option]', (els) =>
      els.map((e) => ({ name: e.querySelector('.opt-name').textContent, online: e.querySelector('.dot.on') !== null })),
    );
    await page.keyboard.press('Escape');
    assert.equal(options.length, HOSTS);
    const natural = new Intl.Collator('en', { numeric: true }).compare;
    for (const online of [true, false]) {
      const names = options.filter((o) => o.online === online).map((o) => o.name);
      assert.deepEqual(names, [...names].sort(natural), `${online ? 'online' : 'offline'} hosts in natural order`);
    }
    const firstOffline = options.findIndex((o) => !o.online);
    assert.ok(firstOffline === -1 || firstOffline === options.filter((o) => o.online).length, 'online first');
  });

  await t.test('sorts by CPU, both ways', async () => {
    await page.click('[data-testid=fleet-table] [data-column=cpu]');
    await waitFor('busiest first', async () => (await hostsShown(page))[0] === name(777));
    const cpus = await page.$$eval('[data-testid=fleet-table] .frow', (rows) =>
      rows
        .map((r) => ({ cpu: Number(r.dataset.cpu), top: r.parentElement.getBoundingClientRect().top }))
        .sort((a, b) => a.top - b.top)
        .map((r) => r.cpu),
    );
    for (let i = 1; i < cpus.length; i += 1) assert.ok(cpus[i - 1] >= cpus[i], `descending: ${cpus.join(', ')}`);
    await page.click('[data-testid=fleet-table] [data-column=cpu]');
    await waitFor('idlest first', async () => (await hostsShown(page))[0] === name(5));
    await shot(page, 'sorted-by-cpu');
  });

  await t.test('filters by a label, a figure and a name pattern', async () => {
    await page.fill('[data-testid=fleet-filter]', 'env=prod');
    const prod = HOSTS / 4;
    await waitFor('prod hosts only', async () => (await page.textContent('[data-testid=fleet-counts]')).includes(`${prod} of`));
    for (const host of await hostsShown(page)) assert.equal(Number(host.slice(4)) % 4, 0, `${host} is env=prod`);
    await page.fill('[data-testid=fleet-filter]', 'label:env=prod cpu>80');
    const hot = Array.from({ length: HOSTS }, (_, i) => i + 1).filter((i) => envOf(i) === 'prod' && cpuOf(i) > 80);
    await waitFor('hot prod hosts', async () => (await page.textContent('[data-testid=fleet-counts]')).includes(`${hot.length} of`));
    await page.fill('[data-testid=fleet-filter]', 'web-99*');
    await waitFor('a name pattern', async () => (await page.textContent('[data-testid=fleet-counts]')).includes('11 of'));
    await page.fill('[data-testid=fleet-filter]', 'nothing-like-this');
    await page.waitForSelector('text=No host matches');
    await page.fill('[data-testid=fleet-filter]', '');
  });

  await t.test('groups by a label', async () => {
    await page.selectOption('[data-testid=fleet-group]', 'env');
    await page.waitForSelector('[data-testid=fleet-table] [data-group=prod]');
    await shot(page, 'grouped');
    await page.click('[data-testid=fleet-table] [data-group=prod]');
    await page.click('[data-testid=fleet-table] [data-group=staging]');
    assert.equal(await page.locator('[data-testid=fleet-table] .frow').count(), 0, 'both groups folded');
    await page.selectOption('[data-testid=fleet-group]', '');
  });

  await t.test('follows a live change', async () => {
    // Sorted busiest first again; a quiet host becomes the busiest and moves to the top.
    await page.click('[data-testid=fleet-table] [data-column=cpu]');
    await waitFor('busiest first', async () => (await hostsShown(page))[0] === name(777));
    await upload(collector.base, key, snapshotOf(3, 2, 99.5));
    await waitFor('web-3 on top', async () => (await hostsShown(page))[0] === name(3), 20_000);
    const row = page.locator('[data-testid=fleet-table] .frow[data-host="web-3"]');
    assert.equal(await row.getAttribute('data-cpu'), '99.5');
    assert.ok(await row.locator('svg.spark path.line').count(), 'its sparkline has two points now');
    await shot(page, 'live');
  });

  await t.test('an admin edits a host\'s labels from its row; bad ones are refused in words', async () => {
    const row = page.locator('[data-testid=fleet-table] .frow[data-host="web-3"]');
    await row.hover();
    await page.click('[aria-label="Edit the labels of web-3"]');
    await page.waitForSelector('[data-testid=labels-dialog]');
    await page.fill('[data-testid=labels-input]', 'bad key=x');
    await page.click('[data-testid=labels-save]');
    const refusal = await page.waitForSelector('[data-testid=labels-dialog] [role=alert]');
    assert.match(await refusal.textContent(), /bad key/);
    await page.fill('[data-testid=labels-input]', 'env=prod\nteam=core');
    await page.click('[data-testid=labels-save]');
    await waitFor('the new labels on the row', async () => /team=core/.test(await row.textContent()));
    assert.match(await row.textContent(), /env=prod/, 'the admin\'s value wins over the one set before');
    await shot(page, 'labels-edited');
  });

  await t.test('a click opens the host', async () => {
    await page.locator('[data-testid=fleet-table] .frow[data-host="web-3"]').click();
    await page.waitForSelector('[data-testid=process-table] .prow', { timeout: 20_000 });
    assert.match(page.url(), /#\/processes\?host=web-3/);
  });

  await t.test('hosts compared: chosen by label, the top few by the figure', async () => {
    await page.click('nav a:has-text("History")');
    await page.waitForSelector('[data-testid=compare-query]', { timeout: 20_000 });
    // 250 hosts are env=prod, and web-3 since an admin said so above.
    await page.fill('[data-testid=compare-query]', 'env=prod');
    await waitFor('the note on the choice', async () =>
      /The 8 of 251 matching hosts/.test((await page.textContent('[data-testid=compare-note]').catch(() => '')) ?? ''),
    );
    await page.waitForSelector('[data-testid=chart-compare]');
    await shot(page, 'compared');
  });

  await context.close();
  assert.deepEqual(problems, []);
});
