// The network map in the browser: a real `procyon serve --no-local` fed two hosts'
// snapshots in the full format (a real `procyon snapshot` of this machine with its
// processes and sockets replaced): `app` on map-web connects to `postgres` on map-db
// over their non-loopback addresses, and to an outside address. Debian's Chromium shows
// the map; the test reads the canvas's pixels for the nodes' and the edges' colours (a
// blank canvas fails), finds a process with the search, opens its details and goes
// through to the process explorer. A screenshot goes to artifacts/map.png.
//
//   cargo build && (cd ui && npm ci && npm run build) && node --test tests/browser/map.test.mjs

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, launchChromium, procyonBin, startCollector, upload, waitFor } from './harness.mjs';

const ARTIFACTS = join(ROOT, 'artifacts');
const HOSTILE = '<img src=x onerror="window.__pwned=1">';

let collector;
let chromium;
let template;
let key;
const problems = [];
const WEB = [[20, 'app'], [21, HOSTILE]];
const WEB_SOCKETS = [
  ['10.1.0.1:40000', '10.1.0.2:5432', 'ESTABLISHED', 20],
  ['10.1.0.1:40001', '93.184.216.34:443', 'ESTABLISHED', 20],
  ['10.1.0.1:40002', '93.184.216.34:443', 'ESTABLISHED', 21],
];

/** A snapshot of `hostname` with these processes and sockets in place of this machine's. */
function snapshot(template, hostname, seq, processes, connections) {
  const proto = template.processes.find((p) => !p.kernel_thread) ?? template.processes[0];
  return {
    ...template,
    host: { ...template.host, id: `map-test-${hostname}`, hostname },
    seq,
    taken_at: new Date().toISOString(),
    processes: processes.map(([pid, name]) => ({ ...proto, pid, ppid: null, name, cmd: name, kernel_thread: false })),
    connections: connections.map(([local, remote, state, pid]) => {
      const [la, lp] = local.split(/:(?=\d+$)/);
      const [ra, rp] = remote ? remote.split(/:(?=\d+$)/) : [null, null];
      return {
        protocol: 'tcp',
        local_address: la,
        local_port: Number(lp),
        remote_address: ra,
        remote_port: rp === null ? null : Number(rp),
        state,
        pid,
      };
    }),
    ports: { by_local_port: [], listening: [] },
  };
}

before(async () => {
  assert.ok(existsSync(join(ROOT, 'ui/dist/index.html')), 'ui/dist is missing: run `npm ci && npm run build` in ui/');
  collector = await startCollector({ args: ['--no-local'] });
  template = JSON.parse(execFileSync(procyonBin(), ['snapshot'], { encoding: 'utf8', maxBuffer: 64 << 20 }));
  key = collector.cli(['apikey', 'create', '--name', 'map']).trim().split('\n').pop().trim();
  await upload(
    collector.base,
    key,
    snapshot(template, 'map-db', 1, [[30, 'postgres']], [
      ['0.0.0.0:5432', null, 'LISTEN', 30],
      ['10.1.0.2:5432', '10.1.0.1:40000', 'ESTABLISHED', 30],
    ]),
  );
  await upload(
    collector.base,
    key,
    snapshot(template, 'map-web', 1, WEB, WEB_SOCKETS),
  );
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

/** Pixels of the map's canvases close to `hex` (anti-aliasing blends the edges): how
 *  many, and where their middle is. */
async function colour(page, hex) {
  return page.evaluate((hex) => {
    const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    let n = 0;
    let sx = 0;
    let sy = 0;
    for (const canvas of document.querySelectorAll('[data-testid=network-map] canvas')) {
      const ctx = canvas.getContext('2d');
      if (!ctx || canvas.width === 0) continue;
      const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] > 200 && Math.abs(data[i] - want[0]) < 24 && Math.abs(data[i + 1] - want[1]) < 24 && Math.abs(data[i + 2] - want[2]) < 24) {
          n++;
          sx += (i / 4) % canvas.width;
          sy += Math.floor(i / 4 / canvas.width);
        }
      }
    }
    return { n, x: n ? sx / n : 0, y: n ? sy / n : 0 };
  }, hex);
}

const pixelsOf = async (page, hex) => (await colour(page, hex)).n;

test('the network map draws nodes and an edge across hosts', { timeout: 120_000 }, async () => {
  const context = await chromium.browser.newContext({ viewport: { width: 1280, height: 720 }, colorScheme: 'light' });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(`CSP: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('dialog', (d) => {
    problems.push(`a dialog opened: ${d.message()}`);
    void d.dismiss();
  });

  await page.goto(`${collector.base}/`);
  await page.fill('input[name=username]', 'admin');
  await page.fill('input[name=password]', collector.adminPassword);
  await page.click('button[type=submit]');
  await page.click('nav a:has-text("Map")');
  assert.match(page.url(), /#\/map/);
  // The view added to the top bar leaves it fitting a 1280 px window.
  const bar = await page.evaluate(() => {
    const el = document.querySelector('.topbar');
    return { scroll: el.scrollWidth, client: el.clientWidth };
  });
  assert.ok(bar.scroll <= bar.client, `the top bar overflows: ${JSON.stringify(bar)}`);

  const map = page.locator('[data-testid=network-map]');
  await waitFor('the map to hold its nodes and edges', async () => Number(await map.getAttribute('data-edges')) >= 3);
  assert.equal(await map.getAttribute('data-nodes'), '4', 'app, the hostile-named process, postgres, the outside address');
  assert.match(await page.textContent('[data-testid=map-counts]'), /3 edges \(1 between hosts\)/);

  // Drawn, not just counted: process nodes (green), the outside address (orange) and
  // established edges (blue) are on the canvas.
  const process = await waitFor('process nodes on the canvas', () => pixelsOf(page, '#10b981'));
  const outsideNode = await pixelsOf(page, '#f97316');
  const edges = await waitFor('edges on the canvas', () => pixelsOf(page, '#3b82f6'));
  assert.ok(process > 50 && outsideNode > 20 && edges > 20, `pixels: process ${process}, outside ${outsideNode}, edges ${edges}`);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'map.png') });

  // Live: a new connection of map-web shows without a reload, and nothing drawn moves
  // (the process nodes' pixels stay where they were).
  const before = await colour(page, '#10b981');
  await upload(
    collector.base,
    key,
    snapshot(template, 'map-web', 2, WEB, [...WEB_SOCKETS, ['10.1.0.1:40003', '198.51.100.7:8443', 'SYN_SENT', 20]]),
  );
  await waitFor('the new connection on the live map', async () => Number(await map.getAttribute('data-edges')) === 4, 30_000);
  await page.screenshot({ path: join(ARTIFACTS, 'map-live.png') });
  // A thin slanted line is all blended pixels: anything clearly red counts.
  const red = await waitFor('the opening connection drawn', () =>
    page.evaluate(() => {
      let n = 0;
      for (const canvas of document.querySelectorAll('[data-testid=network-map] canvas')) {
        const ctx = canvas.getContext('2d');
        if (!ctx || canvas.width === 0) continue;
        const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 60 && d[i] > 150 && d[i] - d[i + 1] > 60 && d[i] - d[i + 2] > 60) n++;
      }
      return n;
    }),
  );
  assert.ok(red > 10, `red pixels: ${red}`);
  const after = await colour(page, '#10b981');
  assert.ok(
    Math.abs(after.x - before.x) < 1 && Math.abs(after.y - before.y) < 1 && Math.abs(after.n - before.n) < before.n * 0.05,
    `process nodes moved: ${JSON.stringify({ before, after })}`,
  );

  // Search, details, and through to the process explorer.
  await page.fill('[data-testid=map-search]', 'postgres');
  await page.click('[data-testid=map-found] button:has-text("postgres")');
  const details = await page.textContent('[data-testid=map-details]');
  assert.match(details, /map-db/);
  assert.match(details, /← app \(20\)/);
  assert.match(details, /5432/);
  // The map glides to the node (edges are hidden while the view moves).
  await page.waitForTimeout(600);
  await page.screenshot({ path: join(ARTIFACTS, 'map-details.png') });

  // One node per host: the two hosts and the two outside addresses.
  await page.fill('[data-testid=map-search]', '');
  await page.check('[data-testid=map-collapse]');
  await waitFor('one node per host', async () => (await map.getAttribute('data-nodes')) === '4');
  await page.uncheck('[data-testid=map-collapse]');

  // Filters: the port keeps the edge to postgres only.
  await page.fill('[data-testid=map-port]', '5432');
  await waitFor('the port filter', async () => (await map.getAttribute('data-edges')) === '1');
  await page.fill('[data-testid=map-port]', '');
  await page.selectOption('[data-testid=map-state]', 'SYN_SENT');
  await waitFor('the state filter', async () => (await map.getAttribute('data-edges')) === '1');
  await page.selectOption('[data-testid=map-state]', '');

  await page.fill('[data-testid=map-search]', 'postgres');
  await page.click('[data-testid=map-found] button:has-text("postgres")');
  await page.click('[data-testid=map-open]');
  await waitFor('the explorer of map-db', () => /#\/processes\?host=map-db/.test(page.url()));
  await page.waitForSelector('[data-testid=process-drawer]', { timeout: 20_000 });
  assert.equal(await page.textContent('[data-testid=drawer-name]'), 'postgres');

  assert.equal(await page.evaluate(() => window.__pwned), undefined, 'a hostile name ran nothing');
  assert.deepEqual(problems, []);
  await context.close();
});
