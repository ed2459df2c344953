// The dashboard end to end: a real `procyon serve` (debug build, port 0, temporary data,
// sampling this machine every second), real processes and a real socket made by this
// test, and Debian's Chromium driving the built dashboard that the collector serves.
//
//   cargo build && (cd ui && npm ci && npm run build) && node --test tests/browser/e2e.test.mjs
//
// Screenshots of the main views go to artifacts/ (gitignored). Everything this test
// starts is stopped in `after`, whatever happened, and the whole run is bounded.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, launchChromium, procyonBin, startCollector, startNamedProcess, stateOf, upload, waitFor } from './harness.mjs';

const ARTIFACTS = join(ROOT, 'artifacts');
const UNIQUE = `procyon-e2e-${randomBytes(4).toString('hex')}`;
const VIEWER = { name: 'e2e-viewer', password: 'viewer-password-0123' };
const CHAIN = `procyon-e2e-chain-${randomBytes(4).toString('hex')}`;
const BULK = `procyon-e2e-bulk-${randomBytes(4).toString('hex')}`;
/** Levels of the tree that indent (`MAX_INDENT` in ProcessExplorer.svelte); deeper
 *  ones stay at the cap. */
const INDENT_CAP = 14;
const HOSTILE_HOST = 'e2e-hostile';
const AGENT_HOST = 'e2e-agent-host';
const HOSTILE = {
  name: '<img src=x onerror="window.__pwned=1;alert(1)">',
  user: '"><svg onload=alert(3)>',
  cmd: '<script>window.__pwned=2</script><iframe src="javascript:alert(4)"></iframe>',
};

let collector;
let chromium;
let parent; // bash, whose child is the uniquely named process
let chain; // the top of a chain of nested shells, deeper than the indentation cap
let targetPid;
let binDir;
let server;
let port;
const problems = []; // CSP violations, page errors, dialogs: none may happen

function watch(page, label) {
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(`${label}: CSP: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${label}: page error: ${e.message}`));
  page.on('dialog', (d) => {
    problems.push(`${label}: a JavaScript dialog opened: ${d.message()}`);
    void d.dismiss();
  });
}

async function shot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `dashboard-${name}.png`) });
}

async function signIn(page, username, password) {
  const response = await page.goto(`${collector.base}/`);
  assert.equal(response.status(), 200, 'the collector serves the dashboard');
  // The processes view by name: with more than one host the front door is the overview.
  await page.evaluate(() => (window.location.hash = '#/processes'));
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=process-table] .prow', { timeout: 20_000 });
}

async function search(page, text) {
  await page.fill('[data-testid=process-search]', text);
}

const row = (page, pid) => page.locator(`[data-testid=process-table] .prow[data-pid="${pid}"]`);

before(async () => {
  assert.ok(existsSync(join(ROOT, 'ui/dist/index.html')), 'ui/dist is missing: run `npm ci && npm run build` in ui/');
  collector = await startCollector({ args: ['--interval', '1'] });
  assert.ok(collector.adminPassword, 'the first start prints the admin password');
  collector.cli(['user', 'add', VIEWER.name, '--role', 'viewer', '--password-stdin'], `${VIEWER.password}\n`);

  ({ parent, pid: targetPid, binDir } = await startNamedProcess(UNIQUE));

  // 18 shells nested, each the parent of the next (and each with CHAIN on its
  // command line, to find them), in a process group of their own to end them at once.
  const script = join(binDir, 'chain.sh');
  writeFileSync(script, 'n=$1; if [ "$n" -gt 0 ]; then sh "$0" $((n - 1)) "$2" & wait; else exec sleep 600; fi\n');
  chain = spawn('sh', [script, '18', CHAIN], { stdio: 'ignore', detached: true });

  // A socket this process listens on.
  server = createServer(() => {});
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  port = server.address().port;

  chromium = await launchChromium();
});

after(async () => {
  // Stop everything, each step on its own so that one failure does not leave the rest.
  for (const step of [
    () => chromium?.close(),
    () => {
      if (targetPid) {
        try {
          process.kill(targetPid, 'SIGCONT');
          process.kill(targetPid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    },
    () => parent?.kill('SIGKILL'),
    () => {
      if (chain?.pid) {
        try {
          process.kill(-chain.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    },
    () => new Promise((ok) => (server ? server.close(() => ok()) : ok())),
    () => collector?.stop(),
    () => binDir && rmSync(binDir, { recursive: true, force: true }),
  ]) {
    try {
      await step();
    } catch (e) {
      console.error('cleanup:', e);
    }
  }
});

test('the dashboard, end to end', { timeout: 240_000 }, async (t) => {
  const context = await chromium.browser.newContext({ viewport: { width: 1280, height: 720 }, colorScheme: 'light' });
  const page = await context.newPage();
  watch(page, 'admin');

  await t.test('the collector sends the dashboard with a strict CSP and cache headers', async () => {
    const index = await fetch(`${collector.base}/`);
    const csp = index.headers.get('content-security-policy');
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(index.headers.get('cache-control'), 'no-cache');
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(await index.text())[1];
    const js = await fetch(`${collector.base}${asset}`);
    assert.match(js.headers.get('cache-control'), /immutable/);
    const missing = await fetch(`${collector.base}/api/nope`);
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error, 'not_found');
  });

  await t.test('signs in', async () => {
    await page.goto(`${collector.base}/`);
    await shot(page, 'sign-in');
    await signIn(page, 'admin', collector.adminPassword);
    await waitFor('live data', async () => (await page.textContent('[data-testid=live-state]')).includes('Live'));
  });

  await t.test('finds the test process by name and by pid', async () => {
    await search(page, UNIQUE);
    await row(page, targetPid).waitFor({ timeout: 20_000 });
    assert.equal(await row(page, targetPid).getAttribute('data-name'), UNIQUE);
    // The name also matches the command line of its parent (bash -c "…/NAME 600 & …").
    const found = await page.locator('[data-testid=process-table] .prow').evaluateAll((rows) => rows.map((r) => Number(r.dataset.pid)));
    assert.deepEqual(found.sort(), [parent.pid, targetPid].sort());
    await search(page, `name:${UNIQUE}`);
    await waitFor('a name filter', async () => (await page.locator('[data-testid=process-table] .prow').count()) === 1);
    await search(page, String(targetPid));
    await row(page, targetPid).waitFor();
    await search(page, '');
    await page.waitForTimeout(1200);
    await shot(page, 'processes');
  });

  await t.test('shows it in the tree under its parent', async () => {
    await page.click('[data-testid=mode-tree]');
    await search(page, UNIQUE);
    await row(page, targetPid).waitFor();
    const order = await page.locator('[data-testid=process-table] .prow').evaluateAll((rows) =>
      rows.map((r) => ({ pid: Number(r.dataset.pid), level: Number(r.getAttribute('aria-level')) })),
    );
    const at = order.findIndex((r) => r.pid === targetPid);
    assert.ok(at > 0, `the process has rows above it: ${JSON.stringify(order)}`);
    assert.equal(order[at - 1].pid, parent.pid, 'the row above is its parent');
    assert.equal(order[at].level, order[at - 1].level + 1, 'one level deeper than its parent');
    // And a person sees it so: the name starts further right than its parent's.
    const left = (pid) => row(page, pid).locator('.pname').evaluate((e) => e.getBoundingClientRect().left);
    const [own, parents] = [await left(targetPid), await left(parent.pid)];
    assert.ok(own >= parents + 10, `the name is indented under its parent's: ${own} against ${parents}`);

    // At every depth up to the cap, where the name's text starts on screen: each level
    // of the chain right of the one above it, and from the cap on, straight below it.
    await page.setViewportSize({ width: 1280, height: 1600 });
    await search(page, CHAIN);
    const levels = await waitFor('the whole chain in the tree', async () => {
      const rows = await page.locator('[data-testid=process-table] .prow').evaluateAll((rs) =>
        rs.map((r) => ({
          pid: Number(r.dataset.pid),
          name: r.dataset.name,
          depth: Number(r.getAttribute('aria-level')) - 1,
          x: r.querySelector('.pname').getBoundingClientRect().left,
        })),
      );
      const top = rows.findIndex((r) => r.pid === chain.pid);
      // 18 shells, the top and 17 below it, each with CHAIN on its command line (the
      // sleep at the bottom has not, so the search leaves it out).
      return top >= 0 && rows.length >= top + 18 ? rows.slice(top, top + 18) : null;
    }, 30_000);
    assert.ok(levels[levels.length - 1].depth > INDENT_CAP, `the chain goes past the cap: ${JSON.stringify(levels)}`);
    for (let i = 1; i < levels.length; i += 1) {
      const [above, here] = [levels[i - 1], levels[i]];
      assert.equal(here.depth, above.depth + 1, `nested: ${JSON.stringify(levels)}`);
      if (here.depth <= INDENT_CAP) {
        assert.ok(here.x >= above.x + 10, `depth ${here.depth} starts right of depth ${above.depth}: ${here.x} against ${above.x}`);
      } else {
        assert.equal(here.x, above.x, `depth ${here.depth}, past the cap, starts where depth ${above.depth} does`);
      }
    }
    await shot(page, 'tree-deep');
    await page.setViewportSize({ width: 1280, height: 720 });
    await search(page, '');
    await page.waitForTimeout(500);
    await shot(page, 'tree');
  });

  await t.test('suspends it through the confirmation dialog, and resumes it', async () => {
    await page.click('[data-testid=mode-flat]');
    await search(page, UNIQUE);
    await row(page, targetPid).click();
    await page.waitForSelector('[data-testid=process-drawer]');
    assert.equal(await page.textContent('[data-testid=drawer-name]'), UNIQUE);
    await page.click('[data-testid=act-suspend]');
    const dialog = page.locator('[data-testid=action-dialog]');
    await dialog.waitFor();
    const text = await dialog.textContent();
    assert.ok(text.includes(UNIQUE) && text.includes(String(targetPid)) && text.includes(userInfo().username), text);
    await shot(page, 'confirm-dialog');
    // Escape cancels; nothing happens.
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    assert.notEqual(stateOf(targetPid), 'T');

    await page.click('[data-testid=act-suspend]');
    await page.click('[data-testid=confirm-action]');
    await dialog.waitFor({ state: 'detached', timeout: 10_000 });
    await waitFor('the process to stop', () => stateOf(targetPid) === 'T');
    await waitFor('the table to say stopped', async () =>
      (await row(page, targetPid).locator('[data-status]').getAttribute('data-status')) === 'stopped',
    );
    await shot(page, 'suspended');

    await page.click('[data-testid=act-resume]');
    await page.click('[data-testid=confirm-action]');
    await dialog.waitFor({ state: 'detached', timeout: 10_000 });
    await waitFor('the process to run again', () => stateOf(targetPid) !== 'T');
    await waitFor('the table to say it is not stopped', async () =>
      (await row(page, targetPid).locator('[data-status]').getAttribute('data-status')) !== 'stopped',
    );
    await page.keyboard.press('Escape');
  });

  await t.test('acts on several processes at once through one dialog, each with its own outcome', async () => {
    const started = [];
    try {
      for (let i = 0; i < 3; i += 1) started.push(await startNamedProcess(`${BULK}-${i}`));
      const pids = started.map((s) => s.pid);
      await page.click('[data-testid=mode-flat]');
      await search(page, `name:${BULK}`);
      await waitFor('the three processes', async () => (await page.locator('[data-testid=process-table] .prow').count()) === 3, 20_000);
      // A click on the first row's box and a Shift+click on the last's pick all three.
      const boxes = page.locator('[data-testid=process-table] .prow [data-testid=pick]');
      await boxes.nth(0).click();
      await boxes.nth(2).click({ modifiers: ['Shift'] });
      assert.equal(await page.textContent('[data-testid=picked-count]'), '3 picked');
      // The box in the header unpicks, then picks, everything the search matches.
      await page.click('[data-testid=pick-all]');
      assert.equal(await page.locator('[data-testid=bulk-bar]').count(), 0, 'nothing picked');
      await page.click('[data-testid=pick-all]');
      assert.equal(await page.textContent('[data-testid=picked-count]'), '3 picked');
      // Picking opened no details.
      assert.equal(await page.locator('[data-testid=process-drawer]').count(), 0);
      await shot(page, 'bulk-picked');

      await page.click('[data-testid=bulk-kill]');
      const dialog = page.locator('[data-testid=bulk-dialog]');
      await dialog.waitFor();
      const text = await dialog.textContent();
      for (const s of started) assert.ok(text.includes(String(s.pid)), `the dialog names ${s.pid}: ${text}`);
      for (let i = 0; i < 3; i += 1) assert.ok(text.includes(`${BULK}-${i}`), text);
      await shot(page, 'bulk-dialog');
      // The middle one ends by itself while the dialog is open: the other two are
      // still killed, and its outcome says it was gone.
      process.kill(pids[1], 'SIGKILL');
      await waitFor('the middle process to be gone', () => {
        try {
          return stateOf(pids[1]) === 'Z';
        } catch {
          return true;
        }
      });
      await page.click('[data-testid=bulk-confirm]');
      await page.waitForSelector('[data-testid=bulk-close]', { timeout: 20_000 });
      const outcome = await page.locator('[data-testid=bulk-item]').evaluateAll((items) =>
        items.map((e) => [Number(e.dataset.pid), e.dataset.status]),
      );
      assert.deepEqual(Object.fromEntries(outcome), { [pids[0]]: 'success', [pids[1]]: 'not_found', [pids[2]]: 'success' });
      assert.match(await dialog.textContent(), /The process is gone/);
      for (const pid of [pids[0], pids[2]]) {
        await waitFor(`process ${pid} to be killed`, () => {
          try {
            return stateOf(pid) === 'Z';
          } catch {
            return true;
          }
        });
      }
      await shot(page, 'bulk-result');
      await page.click('[data-testid=bulk-close]');
      await dialog.waitFor({ state: 'detached' });
      // The one refused stays picked; the two done do not.
      await waitFor('the selection to keep only what was refused', async () =>
        (await page.locator('[data-testid=picked-count]').count()) === 0 ||
        (await page.textContent('[data-testid=picked-count]')) === '1 picked',
      );
      // Clearing what is left: the refused process has exited, so the next snapshot may
      // drop it (and the bar with it) between the check and the click.
      const clear = page.locator('[data-testid=pick-none]');
      if ((await clear.count()) > 0) await clear.click({ timeout: 3_000 }).catch(async (e) => {
        if ((await clear.count()) > 0) throw e;
      });
      await search(page, '');
    } finally {
      for (const s of started) {
        try {
          process.kill(s.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
        s.parent.kill('SIGKILL');
        rmSync(s.binDir, { recursive: true, force: true });
      }
    }
  });

  await t.test('the audit log shows what was done', async () => {
    await page.click('nav a:has-text("Audit log")');
    await page.waitForSelector('[data-testid=audit-table]');
    const text = await page.textContent('[data-testid=audit-table]');
    assert.ok(text.includes('suspend') && text.includes('resume') && text.includes(String(targetPid)), text);
    await shot(page, 'audit');
  });

  await t.test('the connection table shows a socket this test opened', async () => {
    await page.click('nav a:has-text("Network")');
    await page.fill('[data-testid=connection-search]', `port:${port}`);
    const socket = page.locator(`[data-testid=connection-table] .crow[data-local-port="${port}"]`);
    await socket.first().waitFor({ timeout: 20_000 });
    assert.equal(await socket.first().getAttribute('data-pid'), String(process.pid));
    assert.match(await socket.first().textContent(), /LISTEN/);
    await page.fill('[data-testid=connection-search]', '');
    await shot(page, 'network');
  });

  await t.test('history lists snapshots, draws charts, and opens a past snapshot', async () => {
    await page.click('nav a:has-text("History")');
    await waitFor('stored snapshots', async () => (await page.locator('[data-testid=snapshot-list] tbody tr').count()) >= 2);
    await waitFor('a CPU chart with data', async () =>
      Number(await page.getAttribute('[data-testid=chart-cpu]', 'data-points')) >= 2 &&
      (await page.locator('[data-testid=chart-cpu] canvas').count()) > 0,
    );
    await page.waitForTimeout(800);
    await shot(page, 'history');
    await page.locator('[data-testid=snapshot-list] a').first().click();
    await page.waitForSelector('[data-testid=back-to-live]');
    await search(page, UNIQUE);
    await row(page, targetPid).waitFor();
    await shot(page, 'stored-snapshot');
    await search(page, '');
    await page.click('[data-testid=back-to-live]');
  });

  await t.test('a real agent reports its host, and actions on it go through the agent', async () => {
    const key = collector.cli(['apikey', 'create', '--name', 'e2e-agent']).trim().split('\n').pop().trim();
    const dir = mkdtempSync(join(tmpdir(), 'procyon-e2e-agent-'));
    const keyFile = join(dir, 'api.key');
    writeFileSync(keyFile, key, { mode: 0o600 });
    const agentBin = join(dirname(procyonBin()), 'procyon-agent');
    const agent = spawn(
      agentBin,
      ['--collector', collector.base, '--api-key-file', keyFile, '--hostname', AGENT_HOST, '--interval', '1',
        '--spool', join(dir, 'spool'), '--allow-control'],
      { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, PROCYON_CONFIG: '/dev/null', PROCYON_LOG: 'warn' } },
    );
    try {
      await page.click('nav a:has-text("Processes")');
      await waitFor('the agent host in the picker', async () => {
        await page.click('[data-testid=host-picker]');
        const option = page.locator(`[role=option]:has-text("${AGENT_HOST}")`);
        if ((await option.count()) > 0) {
          await option.first().click();
          return true;
        }
        await page.keyboard.press('Escape');
        await page.waitForTimeout(500);
        return false;
      }, 30_000);
      await search(page, UNIQUE);
      await row(page, targetPid).waitFor({ timeout: 20_000 });
      await row(page, targetPid).click();
      await page.waitForSelector('[data-testid=process-drawer]');
      const dialog = page.locator('[data-testid=action-dialog]');
      await page.click('[data-testid=act-suspend]');
      await page.click('[data-testid=confirm-action]');
      await dialog.waitFor({ state: 'detached', timeout: 20_000 });
      await waitFor('the agent to stop the process', () => stateOf(targetPid) === 'T');
      await shot(page, 'agent-host');
      await page.click('[data-testid=act-resume]');
      await page.click('[data-testid=confirm-action]');
      await dialog.waitFor({ state: 'detached', timeout: 20_000 });
      await waitFor('the agent to resume the process', () => stateOf(targetPid) !== 'T');
      await page.keyboard.press('Escape');
      await search(page, '');

      // The search over every host finds the process on both hosts (the agent runs on
      // this machine too), grouped by host; choosing the collector's own opens it there.
      await page.fill('[data-testid=fleet-search]', `name:${UNIQUE}`);
      await page.press('[data-testid=fleet-search]', 'Enter');
      const results = page.locator('[data-testid=fleet-result]');
      await waitFor('results from both hosts', async () => (await results.count()) === 2, 20_000);
      const found = await results.evaluateAll((rows) => rows.map((r) => [r.dataset.host, Number(r.dataset.pid)]));
      assert.deepEqual(found.map(([, pid]) => pid), [targetPid, targetPid]);
      const otherHost = found.map(([host]) => host).find((host) => host !== AGENT_HOST);
      assert.ok(otherHost && found.some(([host]) => host === AGENT_HOST), JSON.stringify(found));
      await shot(page, 'fleet-search');
      await page.click(`[data-testid=fleet-result][data-host="${otherHost}"]`);
      await page.waitForSelector('[data-testid=process-drawer]', { timeout: 20_000 });
      assert.ok((await page.textContent('[data-testid=process-drawer]')).includes(UNIQUE));
      assert.ok((await page.getAttribute('[data-testid=host-picker]', 'aria-label')).includes(otherHost));
      await page.keyboard.press('Escape');
      // A malformed word is refused, saying which.
      await page.fill('[data-testid=fleet-search]', 'cpu>lots');
      await page.press('[data-testid=fleet-search]', 'Enter');
      await page.waitForSelector('[data-testid=fleet-results] [role=alert]:has-text("cpu>lots")');
      await page.keyboard.press('Escape');
    } finally {
      // A stopping agent writes what it has not had acknowledged to its spool: wait
      // until it is gone before removing the directory under it.
      const exited = agent.exitCode !== null ? Promise.resolve() : new Promise((done) => agent.once('exit', done));
      agent.kill('SIGTERM');
      const timer = setTimeout(() => agent.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  await t.test('hostile process names, users and command lines show as text and run nothing', async () => {
    const key = collector.cli(['apikey', 'create', '--name', 'e2e']).trim().split('\n').pop().trim();
    await upload(collector.base, key, {
      hostname: HOSTILE_HOST,
      snapshot_time: new Date().toISOString(),
      processes: [
        { pid: 100, name: 'init', cpu: 1, memory: '10MB', parent_pid: null, children: [
          { pid: 666, name: HOSTILE.name, user: HOSTILE.user, cmd: HOSTILE.cmd, cpu: 99, memory: '1GB', parent_pid: 100 },
        ] },
      ],
    });
    await page.click('nav a:has-text("Processes")');
    await page.click('[data-testid=host-picker]');
    await page.click(`[role=option]:has-text("${HOSTILE_HOST}")`);
    await row(page, 666).waitFor({ timeout: 20_000 });
    assert.equal(await row(page, 666).locator('.pname').textContent(), HOSTILE.name);
    await row(page, 666).click();
    await page.waitForSelector('[data-testid=process-drawer]');
    assert.equal(await page.textContent('[data-testid=drawer-name]'), HOSTILE.name);
    assert.equal(await page.textContent('[data-testid=drawer-cmd]'), HOSTILE.cmd);
    await page.click('[data-testid=act-kill]');
    assert.equal(await page.textContent('[data-testid=dialog-name]'), HOSTILE.name);
    await shot(page, 'hostile');
    // That host has no agent to carry the action out: the refusal is shown in words,
    // and the dialog stays open.
    await page.click('[data-testid=confirm-action]');
    const refusal = await page.waitForSelector('[data-testid=action-error]', { timeout: 15_000 });
    assert.ok((await refusal.textContent()).length > 20);
    await shot(page, 'action-refused');
    await page.keyboard.press('Escape');
    const injected = await page.evaluate(() => ({
      pwned: window.__pwned ?? null,
      elements: document.querySelectorAll('#app img, #app script, #app iframe, #app svg[onload]').length,
    }));
    assert.deepEqual(injected, { pwned: null, elements: 0 });
    await page.keyboard.press('Escape');
    // A short upload has no network figures: its history says so rather than charting
    // made-up zeros, while CPU and memory are charted.
    await page.click('nav a:has-text("History")');
    const unknown = await page.waitForSelector('[data-testid=chart-network-unknown]', { timeout: 20_000 });
    assert.match(await unknown.textContent(), /no network figures/);
    assert.equal(await page.locator('[data-testid=chart-network]').count(), 0);
    await page.waitForSelector('[data-testid=chart-cpu]');
    await shot(page, 'history-short-upload');
  });

  await t.test('dark theme', async () => {
    const dark = await chromium.browser.newContext({ viewport: { width: 1280, height: 720 }, colorScheme: 'dark' });
    const p = await dark.newPage();
    watch(p, 'dark');
    await signIn(p, 'admin', collector.adminPassword);
    await p.waitForTimeout(1500);
    await shot(p, 'processes-dark');
    await dark.close();
  });

  await t.test('a viewer sees no enabled actions', async () => {
    const viewer = await chromium.browser.newContext({ viewport: { width: 1280, height: 720 } });
    const p = await viewer.newPage();
    watch(p, 'viewer');
    await signIn(p, VIEWER.name, VIEWER.password);
    await search(p, UNIQUE);
    await row(p, targetPid).waitFor({ timeout: 20_000 });
    await row(p, targetPid).click();
    await p.waitForSelector('[data-testid=process-drawer]');
    const actions = p.locator('[data-testid^=act-]');
    assert.equal(await actions.count(), 5);
    for (let i = 0; i < 5; i += 1) assert.equal(await actions.nth(i).isDisabled(), true);
    assert.match(await p.textContent('[data-testid=actions-blocked]'), /viewer/);
    await shot(p, 'viewer');
    await viewer.close();
  });

  await t.test('an admin deletes an offline host, confirmed by its name, and the audit log says so', async () => {
    await page.click('nav a:has-text("Processes")');
    await page.click('[data-testid=host-picker]');
    await page.click(`[role=option]:has-text("${HOSTILE_HOST}")`);
    // Online for 30 s after its upload, then offline: only then is it offered.
    await page.waitForSelector('[data-testid=delete-host]', { timeout: 60_000 });
    await page.click('[data-testid=delete-host]');
    await page.waitForSelector('[data-testid=delete-host-dialog]');
    assert.equal(await page.isDisabled('[data-testid=delete-host-confirm]'), true, 'nothing deleted before the name is typed');
    await page.fill('[data-testid=delete-host-name]', HOSTILE_HOST);
    await shot(page, 'delete-host');
    await page.click('[data-testid=delete-host-confirm]');
    await page.waitForSelector('[data-testid=delete-host-dialog]', { state: 'detached' });
    const token = await collector.login('admin', collector.adminPassword);
    const hosts = await (await fetch(`${collector.base}/api/hosts/`, { headers: { Authorization: `Bearer ${token}` } })).json();
    assert.ok(!hosts.some((h) => h.hostname === HOSTILE_HOST), 'the host is gone');
    await page.click('[data-testid=host-picker]');
    assert.equal(await page.locator(`[role=option]:has-text("${HOSTILE_HOST}")`).count(), 0);
    await page.keyboard.press('Escape');
    await page.click('nav a:has-text("Audit")');
    await page.waitForSelector(`[data-testid=audit-table] tr:has-text("delete host")`, { timeout: 15_000 });
    assert.match(await page.textContent(`[data-testid=audit-table] tr:has-text("delete host")`), new RegExp(HOSTILE_HOST.slice(0, 12)));
    await shot(page, 'audit-delete-host');
  });

  await t.test('says so when the collector goes away', async () => {
    await page.click('nav a:has-text("Processes")');
    await collector.stop();
    await waitFor('the reconnecting state', async () =>
      /Reconnecting|cannot be reached/.test(await page.textContent('body')),
    );
    await page.waitForTimeout(500);
    await shot(page, 'reconnecting');
  });

  await context.close();
  // Requests to a stopped collector fail (the browser logs them); anything else counts.
  const real = problems.filter((p) => !/ERR_CONNECTION_REFUSED|Failed to fetch|WebSocket/.test(p));
  assert.deepEqual(real, [], 'no CSP violation, page error or JavaScript dialog');
});
