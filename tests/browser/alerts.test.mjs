// The Alerts view end to end: a real `procyon serve` sampling this machine every second,
// a uniquely named child process, and Debian's Chromium on the built dashboard. From the
// process's details an admin makes a `process.absent` rule ("alert me when this goes
// away"); the test kills the process; the rule fires on the collector and the top bar's
// badge counts it without a reload; the Alerts view lists it. The rule form checks its
// input before sending, and a viewer sees the rules without the means to change them.
//
//   cargo build && (cd ui && npm ci && npm run build) && node --test tests/browser/alerts.test.mjs
//
// Screenshots go to artifacts/ (gitignored). Everything this test starts is stopped in
// `after`, whatever happened.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, launchChromium, startCollector, startNamedProcess, waitFor } from './harness.mjs';

const ARTIFACTS = join(ROOT, 'artifacts');
const UNIQUE = `procyon-alert-${randomBytes(4).toString('hex')}`;
const VIEWER = { name: 'alerts-viewer', password: 'viewer-password-0123' };

let collector;
let chromium;
let parent;
let targetPid;
let binDir;
const problems = [];

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
  await page.screenshot({ path: join(ARTIFACTS, `alerts-${name}.png`) });
}

async function signIn(page, username, password) {
  await page.goto(`${collector.base}/`);
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=process-table] .prow', { timeout: 20_000 });
}

async function api(token, method, path, body) {
  const r = await fetch(`${collector.base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: r.status === 204 ? null : await r.json() };
}

before(async () => {
  assert.ok(existsSync(join(ROOT, 'ui/dist/index.html')), 'ui/dist is missing: run `npm ci && npm run build` in ui/');
  collector = await startCollector({ args: ['--interval', '1'] });
  collector.cli(['user', 'add', VIEWER.name, '--role', 'viewer', '--password-stdin'], `${VIEWER.password}\n`);
  ({ parent, pid: targetPid, binDir } = await startNamedProcess(UNIQUE));
  chromium = await launchChromium();
});

after(async () => {
  for (const step of [
    () => chromium?.close(),
    () => {
      try {
        if (targetPid) process.kill(targetPid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    },
    () => parent?.kill('SIGKILL'),
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

test('alerts in the dashboard', { timeout: 180_000 }, async (t) => {
  const context = await chromium.browser.newContext({ viewport: { width: 1440, height: 860 } });
  const page = await context.newPage();
  watch(page, 'admin');
  const token = await collector.login('admin', collector.adminPassword);
  const hostname = (await api(token, 'GET', '/api/hosts/')).body[0].hostname;

  await t.test('an admin makes a rule from a process: alert me when this goes away', async () => {
    await signIn(page, 'admin', collector.adminPassword);
    await page.fill('[data-testid=process-search]', `name:${UNIQUE}`);
    const row = page.locator(`[data-testid=process-table] .prow[data-pid="${targetPid}"]`);
    await row.waitFor({ timeout: 20_000 });
    await row.click();
    await page.waitForSelector('[data-testid=process-drawer]');
    await page.click('[data-testid=alert-when-gone]');
    const rule = await waitFor('the rule stored', async () => {
      const rules = (await api(token, 'GET', '/api/alert-rules')).body;
      return rules.find((r) => r.metric === 'process.absent');
    });
    assert.equal(rule.host, hostname);
    assert.equal(rule.process, `name="${UNIQUE}"`);
    assert.equal(rule.name, `${UNIQUE} gone on ${hostname}`);
    // While the process runs, nothing fires and no badge shows.
    await page.waitForTimeout(2500);
    assert.equal(await page.locator('[data-testid=firing-badge]').count(), 0);
  });

  await t.test('the process exits; the rule fires and the badge counts it, live', async () => {
    process.kill(targetPid, 'SIGKILL');
    targetPid = null;
    // for_secs is 10: then the collector fires it, and the top bar polls every 5 s.
    await page.locator('[data-testid=firing-badge]').waitFor({ timeout: 60_000 });
    assert.equal((await page.textContent('[data-testid=firing-badge]')).trim(), '1');
    const alerts = (await api(token, 'GET', '/api/alerts')).body;
    const firing = alerts.filter((a) => a.state === 'firing');
    assert.equal(firing.length, 1);
    assert.equal(firing[0].hostname, hostname);
    await shot(page, 'badge');
  });

  await t.test('the Alerts view lists the firing alert and the rule', async () => {
    await page.click('nav a[href^="#/alerts"]');
    const table = page.locator('[data-testid=alerts-table]');
    await table.waitFor({ timeout: 20_000 });
    const firingRow = table.locator('tr[data-state=firing]');
    await firingRow.waitFor();
    assert.match(await firingRow.textContent(), new RegExp(`${UNIQUE} gone on`));
    await shot(page, 'now');
    await page.click('button[role=tab]:has-text("Rules")');
    await page.locator('[data-testid=rules-table]').waitFor();
    assert.match(await page.textContent('[data-testid=rules-table]'), new RegExp(`name="${UNIQUE}"`));
    await shot(page, 'rules');
  });

  await t.test('the rule form checks its input before sending, and saves a good rule', async () => {
    await page.click('[data-testid=new-rule]');
    const dialog = page.locator('[data-testid=rule-dialog]');
    await dialog.waitFor();
    await dialog.locator('input').first().fill('busy host');
    await dialog.locator('select').first().selectOption('host.cpu_percent');
    await dialog.locator('label:has-text("Threshold") input').fill('lots');
    const before = (await api(token, 'GET', '/api/alert-rules')).body.length;
    await page.click('button[form=rule-form]');
    await page.locator('[data-testid=rule-problem]').waitFor();
    assert.match(await page.textContent('[data-testid=rule-problem]'), /^threshold:/);
    assert.equal((await api(token, 'GET', '/api/alert-rules')).body.length, before, 'nothing was sent');
    await shot(page, 'form-error');
    await dialog.locator('label:has-text("Threshold") input').fill('95');
    await dialog.locator('label:has-text("Clears past") input').fill('80');
    await page.click('button[form=rule-form]');
    await dialog.waitFor({ state: 'detached', timeout: 10_000 });
    const saved = (await api(token, 'GET', '/api/alert-rules')).body.find((r) => r.name === 'busy host');
    assert.ok(saved, 'the rule was stored');
    assert.equal(saved.threshold, 95);
    assert.equal(saved.clear, 80);
  });

  await t.test('the form offers host.new_listening_port with only the fields it takes', async () => {
    await page.click('[data-testid=new-rule]');
    const dialog = page.locator('[data-testid=rule-dialog]');
    await dialog.waitFor();
    await dialog.locator('input').first().fill('new ports');
    await dialog.locator('select').first().selectOption('host.new_listening_port');
    assert.equal(await dialog.locator('label:has-text("Threshold")').count(), 0, 'no threshold');
    assert.equal(await dialog.locator('label:has-text("Repeat every")').count(), 0, 'told once: no repeat');
    assert.match(await dialog.textContent(), /Processes \(optional/);
    await dialog.locator('label:has-text("Resolves after") input').fill('soon');
    const before = (await api(token, 'GET', '/api/alert-rules')).body.length;
    await page.click('button[form=rule-form]');
    await page.locator('[data-testid=rule-problem]').waitFor();
    assert.match(await page.textContent('[data-testid=rule-problem]'), /^for_secs:/);
    assert.equal((await api(token, 'GET', '/api/alert-rules')).body.length, before, 'nothing was sent');
    await dialog.locator('label:has-text("Resolves after") input').fill('0');
    await shot(page, 'new-port-form');
    await page.click('button[form=rule-form]');
    await dialog.waitFor({ state: 'detached', timeout: 10_000 });
    const saved = (await api(token, 'GET', '/api/alert-rules')).body.find((r) => r.name === 'new ports');
    assert.ok(saved, 'the rule was stored');
    assert.equal(saved.metric, 'host.new_listening_port');
    assert.equal(saved.process, null);
    assert.equal(saved.threshold, null);
  });

  await t.test('channels show where they send and their quiet hours, never their secrets', async () => {
    const made = await api(token, 'POST', '/api/alert-channels', {
      name: 'mail', kind: 'email',
      email: { host: 'smtp.example.org', username: 'alerts', password: 'browser-secret-pw', from: 'alerts@example.org', to: ['ops@example.org'] },
      quiet_hours: { start: '22:00', end: '07:00', time_zone: 'Europe/Berlin' },
    });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    await page.reload();
    await page.locator('[data-testid=alerts-table], .empty').first().waitFor({ timeout: 20_000 });
    await page.click('button[role=tab]:has-text("Channels")');
    const table = page.locator('[data-testid=channels-table]');
    await table.waitFor({ timeout: 20_000 });
    const text = await table.textContent();
    assert.match(text, /smtp\.example\.org:587 \(starttls\) → ops@example\.org \(password set\)/);
    assert.match(text, /quiet 22:00–07:00 Europe\/Berlin/);
    assert.doesNotMatch(text, /browser-secret-pw/);
    await shot(page, 'channels');
  });

  await t.test('a viewer sees the rules and alerts, and no way to change them', async () => {
    const viewer = await chromium.browser.newContext({ viewport: { width: 1440, height: 860 } });
    const p = await viewer.newPage();
    watch(p, 'viewer');
    await signIn(p, VIEWER.name, VIEWER.password);
    await p.locator('[data-testid=firing-badge]').waitFor({ timeout: 20_000 });
    await p.click('nav a[href^="#/alerts"]');
    await p.locator('[data-testid=alerts-table]').waitFor({ timeout: 20_000 });
    await p.click('button[role=tab]:has-text("Rules")');
    await p.locator('[data-testid=rules-table]').waitFor();
    assert.equal(await p.locator('[data-testid=new-rule]').count(), 0);
    assert.equal(await p.locator('[data-testid=rules-table] button').count(), 0);
    await shot(p, 'viewer');
    await viewer.close();
  });

  await context.close();
  assert.deepEqual(problems, []);
});
