// Containers in a real browser: a real `procyon serve` sampling its own machine, and
// three real processes the test puts in control groups named as container runtimes
// name theirs (two in a Docker container by id, one in an LXC container by name), as
// the runtimes do: the process enters the group, then starts its program. The explorer
// shows their Container column, `container:` filters them, "Containers" groups them
// under one heading per container, fleet search finds them with `container:`, and the
// map draws one node per container: the LXC container's client talks to the Docker
// container's server over loopback. Screenshots go to artifacts/containers-*.png.
//
// Making control groups needs root; elsewhere the test is skipped, saying so.
//
//   cargo build && (cd ui && npm run build) && node --test tests/browser/containers.test.mjs

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, rmdirSync, symlinkSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, launchChromium, startCollector, waitFor } from './harness.mjs';

const ARTIFACTS = join(ROOT, 'artifacts');
const DOCKER_ID = 'c0ffee00d00d4b1d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d';
const LXC_NAME = 'build-box';

/** cgroup v1's pids hierarchy, else the v2 root, when this process may make groups. */
function cgroupRoot() {
  for (const root of ['/sys/fs/cgroup/pids', '/sys/fs/cgroup']) {
    if (!existsSync(join(root, 'cgroup.procs'))) continue;
    const probe = join(root, `procyon-probe-${process.pid}`);
    try {
      mkdirSync(probe);
      rmdirSync(probe);
      return root;
    } catch {
      return null;
    }
  }
  return null;
}

const root = cgroupRoot();
let base;
let collector;
let chromium;
let binDir;
const children = [];

/** A Python server on a loopback port (it prints the port), and a client of one. */
const SERVER = 'import socket, time\ns = socket.socket()\ns.bind(("127.0.0.1", 0))\ns.listen()\nprint(s.getsockname()[1], flush=True)\nc, _ = s.accept()\ntime.sleep(600)';
const CLIENT = 'import socket, sys, time\nc = socket.create_connection(("127.0.0.1", int(sys.argv[1])))\nprint("connected", flush=True)\ntime.sleep(600)';

/** Starts `program` as `name` (a symlink, so the kernel knows it by that name) inside
 *  the control group `group`, entering it before the program starts, as runtimes do.
 *  Resolves to its pid and the next line it prints (when `args` make it print one). */
async function startIn(group, name, program = ['/usr/bin/sleep', '/bin/sleep'].find(existsSync), args = ['600'], printsLine = false) {
  const link = join(binDir, name);
  if (!existsSync(link)) symlinkSync(program, link);
  const quoted = args.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  const child = spawn('bash', ['-c', `echo $$ > "${join(group, 'cgroup.procs')}" && echo $$ && exec "${link}" ${quoted}`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const lines = createInterface({ input: child.stdout });
  const next = () =>
    new Promise((ok, fail) => {
      lines.once('line', ok);
      child.once('exit', (code) => fail(new Error(`${name} did not start (${code})`)));
    });
  const pid = Number(await next());
  return { pid, line: printsLine ? await next() : null };
}

before(async () => {
  if (!root) return;
  assert.ok(existsSync(join(ROOT, 'ui/dist/index.html')), 'ui/dist is missing: run `npm run build` in ui/');
  base = join(root, `procyon-browser-${process.pid}`);
  mkdirSync(join(base, 'docker', DOCKER_ID), { recursive: true });
  mkdirSync(join(base, `lxc.payload.${LXC_NAME}`), { recursive: true });
  binDir = mkdtempSync(join(tmpdir(), 'procyon-containers-'));
  collector = await startCollector({ args: ['--interval', '1'] });
  chromium = await launchChromium();
});

after(async () => {
  const steps = [
    () => chromium?.close(),
    async () => {
      for (const c of children) {
        if (c.exitCode === null) {
          c.kill('SIGKILL');
          await new Promise((ok) => c.once('exit', ok));
        }
      }
    },
    () => collector?.stop(),
    () => binDir && rmSync(binDir, { recursive: true, force: true }),
    () => {
      if (!base) return;
      for (const dir of [join(base, 'docker', DOCKER_ID), join(base, 'docker'), join(base, `lxc.payload.${LXC_NAME}`), base]) {
        try {
          rmdirSync(dir);
        } catch {
          // gone already
        }
      }
    },
  ];
  for (const step of steps) {
    try {
      await step();
    } catch (e) {
      console.error('cleanup:', e);
    }
  }
});

/** The text of each visible row's cells, name and container, for rows of `ctr-` processes. */
async function rows(page) {
  return page.$$eval('[data-testid=process-table] .vrow', (els) =>
    els.map((el) =>
      el.matches('[data-testid=container-group]')
        ? `# ${el.querySelector('.glabel')?.textContent?.trim()}`
        : `${el.getAttribute('data-name')} @ ${el.querySelector('.container')?.textContent?.trim()}`,
    ),
  );
}

test('the explorer shows, filters and groups processes by container', { timeout: 180_000, skip: root ? false : 'needs root to make control groups' }, async () => {
  const python = ['/usr/bin/python3', '/bin/python3'].find(existsSync);
  const web = await startIn(join(base, 'docker', DOCKER_ID), 'ctr-web', python, ['-c', SERVER], true);
  const worker = await startIn(join(base, 'docker', DOCKER_ID), 'ctr-worker');
  const builder = await startIn(join(base, `lxc.payload.${LXC_NAME}`), 'ctr-builder', python, ['-c', CLIENT, web.line], true);
  assert.equal(builder.line, 'connected');

  const context = await chromium.browser.newContext({ viewport: { width: 1400, height: 900 }, colorScheme: 'light' });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${collector.base}/`);
  await page.fill('input[name=username]', 'admin');
  await page.fill('input[name=password]', collector.adminPassword);
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=process-table] .prow', { timeout: 20_000 });

  // The column: each process with its container, the Docker one by its short id.
  assert.ok((await page.textContent('[data-testid=process-table] .vhead')).includes('Container'));
  await page.fill('[data-testid=process-search]', 'ctr-');
  const shortId = DOCKER_ID.slice(0, 12);
  const wanted = JSON.stringify([`ctr-builder @ ${LXC_NAME}`, `ctr-web @ ${shortId}`, `ctr-worker @ ${shortId}`]);
  let seen = [];
  await waitFor(
    'the three processes with their containers',
    async () => {
      seen = (await rows(page)).sort();
      return JSON.stringify(seen) === wanted;
    },
    30_000,
  ).catch((e) => assert.fail(`${e.message}; rows: ${seen.join(', ')}`));
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'containers-column.png') });

  // The details drawer names it too.
  await page.click('[data-testid=process-table] .prow[data-name="ctr-builder"]');
  await page.waitForSelector('[data-testid=drawer-container]');
  assert.equal(await page.textContent('[data-testid=drawer-container]'), `lxc ${LXC_NAME}`);
  await page.keyboard.press('Escape');
  await page.waitForSelector('[data-testid=process-drawer]', { state: 'detached', timeout: 10_000 });

  // The filter word: by name, and by the start of an id.
  await page.fill('[data-testid=process-search]', `container:${LXC_NAME}`);
  await waitFor('the LXC container only', async () => JSON.stringify(await rows(page)) === JSON.stringify([`ctr-builder @ ${LXC_NAME}`]));
  await page.fill('[data-testid=process-search]', `container:${DOCKER_ID.slice(0, 6)} -name:worker`);
  await waitFor('the Docker container, less its worker', async () => JSON.stringify(await rows(page)) === JSON.stringify([`ctr-web @ ${shortId}`]));

  // Grouped: one heading per container, its processes below it; a heading folds them.
  await page.fill('[data-testid=process-search]', 'ctr-');
  await page.click('[data-testid=mode-containers]');
  await page.click('[data-testid=process-table] [data-column=name]');
  await waitFor('the groups', async () => (await page.locator('[data-testid=container-group]').count()) === 2);
  const grouped = await rows(page);
  assert.deepEqual(grouped, [`# ${LXC_NAME}`, `ctr-builder @ ${LXC_NAME}`, `# ${shortId}`, `ctr-web @ ${shortId}`, `ctr-worker @ ${shortId}`]);
  // The headings span the row: wider than the first column's cell of a process row.
  const headingWidth = await page.locator('[data-testid=container-group] .gcell').first().evaluate((el) => el.getBoundingClientRect().width);
  const pidWidth = await page.locator('[data-testid=process-table] .prow .vcell').first().evaluate((el) => el.getBoundingClientRect().width);
  assert.ok(headingWidth > pidWidth * 5, `the heading spans the row: ${headingWidth} vs ${pidWidth}`);
  await page.screenshot({ path: join(ARTIFACTS, 'containers-grouped.png') });
  await page.click(`[data-testid=container-group][data-container="docker:${DOCKER_ID}"]`);
  await waitFor('the Docker group folded', async () => JSON.stringify(await rows(page)) === JSON.stringify([`# ${LXC_NAME}`, `ctr-builder @ ${LXC_NAME}`, `# ${shortId}`]));

  // Fleet search: `container:` over the hosts' newest snapshots.
  const token = await collector.login('admin', collector.adminPassword);
  const found = await fetch(`${collector.base}/api/processes?q=${encodeURIComponent(`container:${LXC_NAME}`)}`, {
    headers: { Authorization: `Bearer ${token}` },
  }).then((r) => r.json());
  const pids = found.hosts.flatMap((h) => h.processes.map((p) => p.pid));
  assert.deepEqual(pids, [builder.pid]);
  assert.equal(found.hosts[0].processes[0].container.name, LXC_NAME);
  assert.ok(worker.pid > 0);

  // The map, one node per container: the client's container → the server's.
  await page.click('nav a:has-text("Map")');
  await page.waitForSelector('[data-testid=map-collapse-containers]', { timeout: 20_000 });
  await page.check('[data-testid=map-collapse-containers]');
  await page.fill('[data-testid=map-search]', LXC_NAME);
  const node = page.locator('[data-testid=map-found] button', { hasText: `${LXC_NAME} (lxc)` });
  await node.waitFor({ timeout: 30_000 });
  await node.click();
  await waitFor(
    'the edge between the two containers',
    async () => (await page.textContent('[data-testid=map-details]')).includes(`→ ${shortId} (docker)`),
    30_000,
  );
  assert.match(await page.textContent('[data-testid=map-details]'), /container/);
  await page.waitForTimeout(600);
  await page.screenshot({ path: join(ARTIFACTS, 'containers-map.png') });

  assert.deepEqual(errors, []);
  await context.close();
});
