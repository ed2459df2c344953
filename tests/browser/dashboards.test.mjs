// Dashboards in a real browser: a real `procyon serve` (debug build, port 0, temporary
// data, sampling this machine every second) and Debian's Chromium driving the built
// dashboard. A user makes a dashboard, adds widgets, drags one by its handle, reloads,
// and finds it where it was, as the collector stored it; another user sees it
// read-only once it is shared with them.
//
//   cargo build && (cd ui && npm ci && npm run build) && node --test tests/browser/dashboards.test.mjs
//
// Screenshots go to artifacts/ (gitignored).

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, launchChromium, startCollector, waitFor } from './harness.mjs';

const ARTIFACTS = join(ROOT, 'artifacts');
const OWNER = { name: 'dash-owner', password: 'owner-password-0123' };
const OTHER = { name: 'dash-other', password: 'other-password-0123' };

let collector;
let chromium;
const problems = []; // CSP violations and page errors: none may happen

function watch(page, label) {
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(`${label}: CSP: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${label}: page error: ${e.message}`));
}

async function shot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `dashboards-${name}.png`) });
}

async function signIn(page, user) {
  await page.goto(`${collector.base}/`);
  await page.fill('input[name=username]', user.name);
  await page.fill('input[name=password]', user.password);
  await page.click('button[type=submit]');
  await page.waitForSelector('nav[aria-label=Views]', { timeout: 20_000 });
}

async function api(token, path, init = {}) {
  const r = await fetch(`${collector.base}${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...(init.headers ?? {}) },
  });
  return { status: r.status, body: r.status === 204 ? null : await r.json() };
}

before(async () => {
  assert.ok(existsSync(join(ROOT, 'ui/dist/index.html')), 'ui/dist is missing: run `npm ci && npm run build` in ui/');
  collector = await startCollector({ args: ['--interval', '1'] });
  for (const u of [OWNER, OTHER]) {
    collector.cli(['user', 'add', u.name, '--role', 'viewer', '--password-stdin'], `${u.password}\n`);
  }
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

test('dashboards: make, arrange, reload, share', { timeout: 180_000 }, async (t) => {
  const context = await chromium.browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light' });
  const page = await context.newPage();
  watch(page, 'owner');
  await signIn(page, OWNER);
  const token = await collector.login(OWNER.name, OWNER.password);

  await t.test('a new dashboard starts empty', async () => {
    await page.click('nav[aria-label=Views] >> text=Dashboards');
    await page.waitForSelector('[data-testid=dashboards-view]');
    await page.click('[data-testid=dashboard-new]');
    await page.fill('[data-testid=dashboard-name]', 'Web servers');
    await page.click('[data-testid=dashboard-name-save]');
    await waitFor('the dashboard is stored', async () => (await api(token, '/api/dashboards')).body.length === 1);
    assert.equal(await page.locator('[data-testid=grid-item]').count(), 0);
  });

  await t.test('widgets are added and saved', async () => {
    for (const kind of ['host_chart', 'process_table', 'alerts']) {
      await page.selectOption('[data-testid=widget-add]', kind);
    }
    await waitFor('three widgets', async () => (await page.locator('[data-testid=grid-item]').count()) === 3);
    const stored = await waitFor('the widgets are stored', async () => {
      const [d] = (await api(token, '/api/dashboards')).body;
      return d.widgets.length === 3 && d;
    });
    assert.deepEqual(
      stored.widgets.map((w) => [w.kind, w.x, w.y]),
      [
        ['host_chart', 0, 0],
        ['process_table', 0, 4],
        ['alerts', 0, 10],
      ],
    );
    // The chart draws this machine's CPU; the table lists its processes.
    await page.waitForSelector('[data-kind=host_chart] canvas', { timeout: 20_000 });
    await page.waitForSelector('[data-kind=process_table] tbody tr', { timeout: 20_000 });
  });

  let moved;
  await t.test('a widget is dragged next to another', async () => {
    const alerts = page.locator('[data-testid=grid-item]').nth(2);
    const handle = alerts.locator('[data-testid=widget-drag]');
    const grid = await page.locator('[data-testid=dashboard-grid]').boundingBox();
    const chart = await page.locator('[data-testid=grid-item]').nth(0).boundingBox();
    const box = await alerts.boundingBox();
    const from = await handle.boundingBox();
    // Half the grid (6 of 12 columns) to the right, and up to the chart's row: the
    // widget lands beside the chart.
    const start = { x: from.x + from.width / 2, y: from.y + from.height / 2 };
    const to = { x: start.x + grid.width / 2, y: start.y - (box.y - chart.y) };
    await page.mouse.move(start.x, start.y);
    await page.mouse.down();
    // In steps, each given a frame to be handled, as a hand moves.
    for (let i = 1; i <= 20; i++) {
      await page.mouse.move(start.x + ((to.x - start.x) * i) / 20, start.y + ((to.y - start.y) * i) / 20);
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
    }
    await page.mouse.up();
    await shot(page, 'dragged');
    moved = await waitFor('the move is stored', async () => {
      const [d] = (await api(token, '/api/dashboards')).body;
      const w = d.widgets.find((x) => x.kind === 'alerts');
      return w.x === 6 && w.y === 0 && d;
    });
    await shot(page, 'arranged');
  });

  await t.test('after a reload it is where it was', async () => {
    await page.reload();
    await page.waitForSelector('[data-kind=alerts]', { timeout: 20_000 });
    const item = page.locator('[data-testid=grid-item]:has([data-kind=alerts])');
    assert.equal(await item.getAttribute('gs-x'), '6');
    assert.equal(await item.getAttribute('gs-y'), '0');
    // And on screen: right of the chart, at the same height.
    const chart = await page.locator('[data-testid=grid-item]:has([data-kind=host_chart])').boundingBox();
    const box = await item.boundingBox();
    assert.ok(box.x > chart.x + chart.width - 10, `alerts at x ${box.x}, the chart ends at ${chart.x + chart.width}`);
    assert.ok(Math.abs(box.y - chart.y) < 5, `alerts at y ${box.y}, the chart at ${chart.y}`);
    const [d] = (await api(token, '/api/dashboards')).body;
    assert.deepEqual(d.widgets, moved.widgets, 'the reload changed nothing stored');
    await shot(page, 'reloaded');
  });

  await t.test('exported as JSON and imported as a new private dashboard', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=dashboard-export]')]);
    const file = join(ARTIFACTS, 'dashboards-export.json');
    mkdirSync(ARTIFACTS, { recursive: true });
    await download.saveAs(file);
    const exported = JSON.parse(readFileSync(file, 'utf8'));
    assert.deepEqual(exported, { name: 'Web servers', shared: 'private', shared_with: [], widgets: moved.widgets });
    writeFileSync(file, JSON.stringify({ ...exported, name: 'Imported' }));
    await page.setInputFiles('[data-testid=dashboard-import]', file);
    const all = await waitFor('the import is stored', async () => {
      const list = (await api(token, '/api/dashboards')).body;
      return list.length === 2 && list;
    });
    const imported = all.find((d) => d.name === 'Imported');
    assert.deepEqual(imported.widgets, moved.widgets);
    await page.waitForSelector('[data-kind=alerts]');
    assert.equal(await page.locator('[data-testid=dashboard-select]').inputValue(), String(imported.id), 'the import is opened');
    // A file that is not a dashboard is refused with a message, and nothing is stored.
    writeFileSync(file, '{"name": "Bad", "widgets": [{"kind": "pie"}]}');
    await page.setInputFiles('[data-testid=dashboard-import]', file);
    await page.waitForSelector('text=widgets[0].kind');
    assert.equal((await api(token, '/api/dashboards')).body.length, 2);
    // Deleted from the view: the other one is shown again.
    await page.click('button:has-text("Delete")');
    await page.click('[data-testid=dashboard-delete-confirm]');
    await waitFor('the import is deleted', async () => (await api(token, '/api/dashboards')).body.length === 1);
    await waitFor('the first dashboard is shown', async () => (await page.locator('[data-testid=dashboard-select]').inputValue()) !== String(imported.id));
  });

  await t.test('shared, it is read-only to another user', async () => {
    const d = (await api(token, '/api/dashboards')).body.find((x) => x.name === 'Web servers');
    const shared = await api(token, `/api/dashboards/${d.id}`, {
      method: 'PUT',
      body: JSON.stringify({ name: d.name, shared: 'users', shared_with: [OTHER.name], widgets: d.widgets }),
    });
    assert.equal(shared.status, 200);
    const other = await context.browser().newContext({ viewport: { width: 1280, height: 800 } });
    const page2 = await other.newPage();
    watch(page2, 'other');
    await signIn(page2, OTHER);
    await page2.click('nav[aria-label=Views] >> text=Dashboards');
    await page2.waitForSelector('[data-testid=read-only]');
    await page2.waitForSelector('[data-kind=alerts]');
    assert.equal(await page2.locator('[data-testid=widget-add]').count(), 0, 'no editing');
    assert.equal(await page2.locator('[data-testid=widget-drag]').count(), 0, 'no dragging');
    await shot(page2, 'read-only');
    await other.close();
  });

  await t.test("a widget's settings are changed in its form", async () => {
    const chart = page.locator('[data-testid=grid-item]:has([data-kind=host_chart])');
    await chart.locator('[aria-label="Widget settings"]').click();
    await page.waitForSelector('[data-testid=widget-dialog]');
    await page.selectOption('[data-testid=setting-metric]', 'memory_used_bytes');
    await page.fill('[data-testid=setting-title]', 'Memory of every host');
    await page.fill('[data-testid=setting-hosts]', '*');
    await shot(page, 'settings');
    await page.click('[data-testid=widget-settings-save]');
    await waitFor('the settings are stored', async () => {
      const d = (await api(token, '/api/dashboards')).body.find((x) => x.name === 'Web servers');
      const w = d.widgets.find((x) => x.kind === 'host_chart');
      return w.metric === 'memory_used_bytes' && w.title === 'Memory of every host' && w.hosts === '*' && w.x === 0;
    });
    await page.waitForSelector('[data-kind=host_chart] >> text=Memory of every host');
    // A filter the explorer would refuse is named, and nothing is stored.
    const table = page.locator('[data-testid=grid-item]:has([data-kind=process_table])');
    await table.locator('[aria-label="Widget settings"]').click();
    await page.fill('[data-testid=setting-filter]', 'cpu>>5');
    await page.click('[data-testid=widget-settings-save]');
    await page.waitForSelector('[data-testid=widget-dialog] >> text=filter:');
    const d = (await api(token, '/api/dashboards')).body.find((x) => x.name === 'Web servers');
    assert.equal(d.widgets.find((x) => x.kind === 'process_table').filter, 'cpu>1');
    await page.click('[data-testid=widget-dialog] button:has-text("Cancel")');
    await page.waitForSelector('[data-testid=widget-dialog]', { state: 'detached' });
  });

  await t.test('every kind draws: a process group over time and the top ports', async () => {
    await page.selectOption('[data-testid=widget-add]', 'process_chart');
    await page.selectOption('[data-testid=widget-add]', 'top_ports');
    // The collector's own process, `procyon`, is the new process chart's default.
    await page.waitForSelector('[data-kind=process_chart] canvas', { timeout: 30_000 });
    // The browser's own connections to the collector are among them.
    await page.waitForSelector('[data-kind=top_ports] tbody tr', { timeout: 20_000 });
    await waitFor('five widgets stored', async () => {
      const d = (await api(token, '/api/dashboards')).body.find((x) => x.name === 'Web servers');
      return d.widgets.length === 5;
    });
    await page.locator('[data-kind=process_chart]').scrollIntoViewIfNeeded();
    await shot(page, 'all-kinds');
  });

  await t.test('a network map widget draws the live map with the map view\'s drawing', async () => {
    await page.selectOption('[data-testid=widget-add]', 'network_map');
    const stored = await waitFor('six widgets stored', async () => {
      const d = (await api(token, '/api/dashboards')).body.find((x) => x.name === 'Web servers');
      return d.widgets.length === 6 && d;
    });
    const map = stored.widgets.find((w) => w.kind === 'network_map');
    assert.deepEqual({ ...map, y: 0 }, { kind: 'network_map', x: 0, y: 0, w: 12, h: 8, collapsed: false });
    // The browser's connections to the collector join two processes of this machine.
    const item = page.locator('[data-kind=network_map]');
    await item.scrollIntoViewIfNeeded();
    await waitFor('nodes on the map', async () => Number(await page.getAttribute('[data-testid=widget-map]', 'data-nodes')) >= 2, 30_000);
    // And on the canvas, not only in the DOM: process nodes' green and edges' blue.
    const pixels = (hex) =>
      page.evaluate((hex) => {
        const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
        let n = 0;
        for (const canvas of document.querySelectorAll('[data-testid=widget-map] canvas')) {
          const ctx = canvas.getContext('2d');
          if (!ctx || canvas.width === 0) continue;
          const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
          for (let i = 0; i < data.length; i += 4) {
            const close = [0, 1, 2].every((k) => Math.abs(data[i + k] - want[k]) < 24);
            if (data[i + 3] > 200 && close) n++;
          }
        }
        return n;
      }, hex);
    const green = await waitFor('process nodes drawn', async () => (await pixels('#10b981')) > 50 && (await pixels('#10b981')));
    await shot(page, 'network-map');
    // One node per host, chosen in its form: stored, and drawn as a host node.
    await item.locator('xpath=ancestor::*[@data-testid="grid-item"]').locator('[aria-label="Widget settings"]').click();
    await page.selectOption('[data-testid=setting-collapsed]', 'true');
    await page.fill('[data-testid=setting-hosts]', '*');
    await page.click('[data-testid=widget-settings-save]');
    await waitFor('collapsed is stored', async () => {
      const d = (await api(token, '/api/dashboards')).body.find((x) => x.name === 'Web servers');
      const w = d.widgets.find((x) => x.kind === 'network_map');
      return w.collapsed === true && w.hosts === '*';
    });
    // Edges within a host are left out then: what stays is this machine as one node
    // joined to outside addresses, or, with none, the note saying so.
    await waitFor(
      'the map redrawn one node per host',
      async () =>
        (await pixels('#10b981')) === 0 &&
        ((await pixels('#64748b')) > 50 || (await item.locator('text=No connection between hosts').count()) === 1),
      30_000,
    );
    assert.ok(green > 50, `green pixels ${green}`);
    await shot(page, 'network-map-collapsed');
  });

  assert.deepEqual(problems, []);
  await context.close();
});
