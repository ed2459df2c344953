// The README's screenshots, taken from the real thing: a `procyon serve` sampling this
// machine every second, three `procyon-agent`s on this machine reporting under other
// names with labels (so the fleet has four hosts, every figure real), an alert rule,
// and a custom dashboard made through the API. Debian's Chromium signs in and takes
// each view at 1280x800.
//
//   cargo build --all-features && (cd ui && npm run build) && node scripts/screenshots.mjs
//
// PROCYON_BIN and PROCYON_AGENT_BIN choose the binaries (debug builds by default);
// PROCYON_SCREENSHOT_WAIT the seconds of history gathered first (default 90).
// Writes docs/screenshots/*.png; look at each one before committing it.

import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ROOT, launchChromium, procyonBin, startCollector, waitFor } from '../tests/browser/harness.mjs';

const OUT = join(ROOT, 'docs', 'screenshots');
const AGENTS = [
  { hostname: 'web-1', labels: ['env=prod', 'role=web'] },
  { hostname: 'web-2', labels: ['env=prod', 'role=web'] },
  { hostname: 'db-1', labels: ['env=prod', 'role=db'] },
];

/** `procyon-agent`, next to `procyon`. */
function agentBin(bin) {
  return process.env.PROCYON_AGENT_BIN ?? join(dirname(bin), 'procyon-agent');
}

async function main() {
  if (!existsSync(join(ROOT, 'ui/dist/index.html'))) throw new Error('ui/dist is missing: run `npm run build` in ui/');
  const bin = process.env.PROCYON_BIN ?? procyonBin();
  // The programs' command lines (shown in the process table) name them as an installed
  // copy would, not by the build directory they run from.
  const collector = await startCollector({ bin, args: ['--interval', '1'], argv0: 'procyon' });
  const agents = [];
  const chrome = await launchChromium();
  try {
    const token = await collector.login('admin', collector.adminPassword);
    const api = async (path, body, method = 'POST') => {
      const r = await fetch(`${collector.base}${path}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
      return r.status === 204 ? null : r.json();
    };
    for (const a of AGENTS) {
      const key = collector.cli(['apikey', 'create', '--name', a.hostname, '--host', a.hostname]).trim().split('\n').pop().trim();
      const keyFile = join(collector.data, `${a.hostname}.key`);
      writeFileSync(keyFile, `${key}\n`);
      chmodSync(keyFile, 0o600);
      const args = ['--collector', collector.base, '--hostname', a.hostname, '--interval', '1', '--api-key-file', keyFile,
        '--spool', join(collector.data, `${a.hostname}.spool`), ...a.labels.flatMap((l) => ['--label', l])];
      agents.push(spawn(agentBin(bin), args, {
        argv0: 'procyon-agent',
        stdio: 'ignore',
        env: { ...process.env, PROCYON_CONFIG: '/dev/null' },
      }));
    }
    const hosts = async () => (await (await fetch(`${collector.base}/api/hosts/`, { headers: { Authorization: `Bearer ${token}` } })).json());
    await waitFor('every agent reporting', async () => (await hosts()).length >= AGENTS.length + 1, 60_000);
    const local = (await hosts()).find((h) => !AGENTS.some((a) => a.hostname === h.hostname)).hostname;

    await api('/api/alert-rules', {
      name: 'many-processes', metric: 'process.count', host: '*', process: 'name:procyon-agent', op: '>', threshold: 0,
      for_secs: 0, clear: 0, severity: 'warning', repeat_secs: 0, channels: [],
    });
    const board = await api('/api/dashboards', {
      name: 'Web tier',
      shared: 'private',
      widgets: [
        { kind: 'host_chart', x: 0, y: 0, w: 6, h: 4, hosts: 'web-*', metric: 'cpu_percent' },
        { kind: 'host_chart', x: 6, y: 0, w: 6, h: 4, hosts: 'web-*', metric: 'memory_used_bytes' },
        { kind: 'process_table', x: 0, y: 4, w: 6, h: 5, host: local, limit: 8 },
        { kind: 'top_ports', x: 6, y: 4, w: 3, h: 5, host: local, limit: 8 },
        { kind: 'alerts', x: 9, y: 4, w: 3, h: 5 },
      ],
    });
    // Some history for the charts (PROCYON_SCREENSHOT_WAIT seconds, default 90).
    await new Promise((r) => setTimeout(r, Number(process.env.PROCYON_SCREENSHOT_WAIT ?? 90) * 1000));

    const page = await chrome.browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`${collector.base}/`);
    await page.fill('input[name=username]', 'admin');
    await page.fill('input[name=password]', collector.adminPassword);
    await page.click('button[type=submit]');
    await page.waitForSelector('nav[aria-label=Views]', { timeout: 30_000 });
    mkdirSync(OUT, { recursive: true });
    const views = [
      ['fleet', '#/fleet', '[data-testid=fleet-table] .frow'],
      ['processes', `#/processes?host=${local}`, '[role=row]'],
      ['network', `#/network?host=${local}`, 'main'],
      ['history', `#/history?host=${local}`, 'main'],
      ['map', '#/map', '[data-testid=network-map]'],
      ['dashboard', `#/dashboards?dashboard=${board.id}`, '.grid-stack-item'],
      ['alerts', '#/alerts', 'main'],
    ];
    for (const [name, hash, ready] of views) {
      await page.goto(`${collector.base}/${hash}`);
      await page.waitForSelector(ready, { timeout: 30_000 });
      // The map of this machine alone: the others here are this same machine again.
      if (name === 'map') {
        await page.fill('input[placeholder^="Hosts"]', local);
        await page.press('input[placeholder^="Hosts"]', 'Enter');
      }
      // Charts and the map settle (layout, first live update).
      await page.waitForTimeout(4000);
      await page.screenshot({ path: join(OUT, `${name}.png`) });
      console.log(`docs/screenshots/${name}.png`);
    }
  } finally {
    for (const a of agents) a.kill('SIGTERM');
    await chrome.close();
    await collector.stop();
  }
}

await main();
