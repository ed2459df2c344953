// GPUs in a real browser: a real `procyon serve --no-local` given snapshots over the
// REST upload path, one host without a GPU and one with (the GPU figures an agent on an
// AMD machine sends: a GPU in `gpus`, a process with `gpu_percent` and
// `gpu_memory_bytes`). Debian's Chromium must show the GPU columns in the process table
// and the GPU card on the host overview, and the GPU column on the fleet overview, only
// where there is a GPU; and an upload with a GPU figure out of range is refused.
//
//   cargo build && (cd ui && npm run build) && node --test tests/browser/gpu.test.mjs
//
// Screenshots go to artifacts/gpu-*.png (gitignored).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, launchChromium, procyonBin, startCollector, upload, waitFor } from './harness.mjs';

const ARTIFACTS = join(ROOT, 'artifacts');
const GIB = 1024 ** 3;
const RADEON = {
  id: '0000:03:00.0',
  name: 'AMD Radeon RX 7900 XTX',
  driver: 'amdgpu',
  utilization_percent: 71,
  memory_used_bytes: 3 * GIB,
  memory_total_bytes: 24 * GIB,
  temperature_celsius: 58,
};

let collector;
let chromium;
let key;
let template;
const problems = [];

async function shot(page, label) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `gpu-${label}.png`) });
}

/** This machine's snapshot (it has no GPU) as host `hostname`, cut to a few processes,
 *  with `gpu` applied to it. */
function snapshotOf(hostname, seq, gpu = (s) => s) {
  return gpu({
    ...structuredClone(template),
    host: { ...template.host, hostname, id: hostname },
    seq,
    taken_at: new Date().toISOString(),
  });
}

/** The GPU figures of an AMD machine: its GPU, and one process rendering on it. */
function withGpu(s) {
  s.gpus = [RADEON];
  s.processes[0] = { ...s.processes[0], name: 'gpu-render', gpu_percent: 63.5, gpu_memory_bytes: 512 * 1024 * 1024 };
  return s;
}

before(async () => {
  assert.ok(existsSync(join(ROOT, 'ui/dist/index.html')), 'ui/dist is missing: run `npm run build` in ui/');
  const bin = procyonBin();
  collector = await startCollector({ args: ['--no-local'] });
  key = collector.cli(['apikey', 'create', '--name', 'gpu']).trim().split('\n').pop().trim();
  const real = JSON.parse(execFileSync(bin, ['snapshot'], { encoding: 'utf8', maxBuffer: 64 << 20 }));
  assert.equal(real.gpus, undefined, 'this machine has no GPU: its snapshot carries no GPU list');
  assert.ok(real.processes.every((p) => !('gpu_percent' in p)), 'nor GPU figures per process');
  const processes = real.processes
    .filter((p) => !p.kernel_thread)
    .slice(0, 20)
    .map((p) => ({ ...p, cmd: p.cmd.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, 200) }));
  template = { ...real, processes, connections: real.connections.slice(0, 10) };
  await upload(collector.base, key, snapshotOf('plain-host', 1));
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

const headers = (page) => page.$$eval('.explorer [role=columnheader] button.sort', (bs) => bs.map((b) => b.dataset.column));

test('GPU figures in the dashboard', { timeout: 180_000 }, async (t) => {
  const context = await chromium.browser.newContext({ viewport: { width: 1400, height: 860 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

  await t.test('a fleet without GPUs has no GPU column', async () => {
    await page.goto(`${collector.base}/`);
    await page.fill('input[name=username]', 'admin');
    await page.fill('input[name=password]', collector.adminPassword);
    await page.click('button[type=submit]');
    // One host: the front door is its processes; the fleet overview is a click away.
    await page.waitForSelector('input[name=password]', { state: 'detached', timeout: 30_000 });
    await page.goto(`${collector.base}/#/fleet`);
    await page.waitForSelector('[data-testid=fleet-table] .frow[data-host=plain-host]', { timeout: 30_000 });
    assert.equal(await page.locator('[data-testid=fleet-table] [data-column=gpu]').count(), 0);
  });

  await t.test('a host without a GPU shows no GPU column and no GPU card', async () => {
    await page.goto(`${collector.base}/#/processes?host=plain-host`);
    await page.waitForSelector('.explorer .prow', { timeout: 30_000 });
    await page.waitForSelector('[data-testid=overview]');
    const cols = await headers(page);
    assert.ok(cols.includes('cpu') && cols.includes('rss'), `the usual columns: ${cols}`);
    assert.ok(!cols.includes('gpu') && !cols.includes('gpuMemory'), `no GPU columns: ${cols}`);
    assert.equal(await page.locator('[data-testid=card-gpu]').count(), 0);
    assert.equal(await page.locator('[data-testid=gpu-cell]').count(), 0);
    await shot(page, 'host-without');
  });

  await t.test('an upload with a GPU figure out of range is refused, naming it', async () => {
    const bad = snapshotOf('gpu-host', 1, (s) => {
      withGpu(s);
      s.processes[0].gpu_percent = 500;
      return s;
    });
    const r = await fetch(`${collector.base}/api/process-snapshots/`, {
      method: 'POST',
      headers: { Authorization: `Api-Key ${key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(bad),
    });
    assert.equal(r.status, 422);
    assert.equal((await r.json()).field, 'processes[0].gpu_percent');
  });

  await t.test('a host with a GPU shows its figures per process and on the overview', async () => {
    await upload(collector.base, key, snapshotOf('gpu-host', 1, withGpu));
    await page.goto(`${collector.base}/#/processes?host=gpu-host`);
    const row = page.locator('.explorer .prow[data-name=gpu-render]');
    await row.waitFor({ timeout: 30_000 });
    const cols = await headers(page);
    assert.deepEqual(cols.slice(cols.indexOf('rss'), cols.indexOf('rss') + 3), ['rss', 'gpu', 'gpuMemory'], `${cols}`);
    assert.equal((await row.locator('[data-testid=gpu-cell]').textContent()).trim(), '63.5%');
    assert.equal((await row.locator('[data-testid=gpu-memory-cell]').textContent()).trim(), '512 MiB');
    // A process without GPU figures on the same host: unknown, not zero.
    const other = page.locator('.explorer .prow:not([data-name=gpu-render])').first();
    assert.equal((await other.locator('[data-testid=gpu-cell]').textContent()).trim(), '—');
    // The cells line up under their headers.
    const head = await page.locator('.explorer [role=columnheader]:has(button[data-column=gpu])').boundingBox();
    const cell = await row.locator('[data-testid=gpu-cell]').boundingBox();
    assert.ok(Math.abs(head.x - cell.x) < 2 && Math.abs(head.width - cell.width) < 2, `${JSON.stringify({ head, cell })}`);

    const card = page.locator('[data-testid=card-gpu]');
    await card.waitFor();
    assert.equal((await card.locator('[data-testid=card-gpu-busy]').textContent()).trim(), '71.0%');
    const text = await card.textContent();
    assert.match(text, /AMD Radeon RX 7900 XTX/);
    assert.equal((await card.locator("[data-testid=card-gpu-temperature]").textContent()).trim(), "58 °C");
    assert.match((await card.locator('[data-testid=card-gpu-memory]').textContent()).trim(), /^3\.00 \/ 24\.0 GiB$/);
    // Seven cards in one row, none cut off.
    const cards = await page.$$eval('[data-testid=overview] > .card', (cs) =>
      cs.map((c) => ({ top: Math.round(c.getBoundingClientRect().top), width: c.getBoundingClientRect().width })),
    );
    assert.equal(cards.length, 7);
    assert.ok(cards.every((c) => c.top === cards[0].top && c.width > 120), JSON.stringify(cards));
    await shot(page, 'host-with');

    // Sorting by GPU puts the process using it first.
    await page.click('.explorer button[data-column=gpu]');
    await waitFor('sorted by GPU', async () => (await page.locator('.explorer .prow').first().getAttribute('data-name')) === 'gpu-render');
  });

  await t.test('the fleet overview shows the GPU column, with the host that has one', async () => {
    await page.goto(`${collector.base}/#/fleet`);
    const cell = page.locator('[data-testid=fleet-table] .frow[data-host=gpu-host] [data-testid=fleet-gpu]');
    await cell.waitFor({ timeout: 30_000 });
    assert.match((await cell.textContent()).trim(), /^71\.0%\s*·\s*3\.00 GiB$/);
    const plain = page.locator('[data-testid=fleet-table] .frow[data-host=plain-host] [data-testid=fleet-gpu]');
    assert.equal((await plain.textContent()).trim(), '—');
    await shot(page, 'fleet');
  });

  await context.close();
  assert.deepEqual(problems, []);
});
