// Browser benchmark of the fleet overview: frame times while scrolling the overview of
// 1,000 hosts whose figures keep changing (each host uploads again every few seconds,
// so the fleet stream brings a few hundred changed rows every second).
//
// A real `procyon serve --no-local` (release build if there is one) is fed full-format
// snapshots of this machine, cut to a few processes, as 1,000 hosts; Debian's Chromium
// shows the overview at 1280×720 and scrolls it steadily while updates arrive;
// requestAnimationFrame timestamps give the frame times.
//
//   node bench/browser/fleet.mjs
//
// Environment: PROCYON_BIN, BENCH_BROWSER_SECONDS (scrolling time, default 10),
// BENCH_HOSTS (default 1000), BENCH_FLEET_RATE (uploads a second, default 200), CHROMIUM. It prints lines `fleet ...: N`
// and writes the same figures to <target>/bench/browser-fleet.json.

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cpus, loadavg } from 'node:os';
import { ROOT, launchChromium, procyonBin, startCollector, upload } from '../../tests/browser/harness.mjs';

const SECONDS = Number(process.env.BENCH_BROWSER_SECONDS ?? 10);
const HOSTS = Number(process.env.BENCH_HOSTS ?? 1000);
/** Uploads a second while scrolling (each host every HOSTS / RATE seconds); 0 for none,
 *  to tell the page's own cost from the machine's load. */
const RATE = Number(process.env.BENCH_FLEET_RATE ?? 200);

function binary() {
  if (process.env.PROCYON_BIN) return process.env.PROCYON_BIN;
  try {
    return procyonBin('release');
  } catch {
    return procyonBin('debug');
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main() {
  const bin = binary();
  const collector = await startCollector({ bin, args: ['--no-local'] });
  const chrome = await launchChromium();
  let feeding = true;
  let feeder;
  try {
    const key = collector.cli(['apikey', 'create', '--name', 'bench']).trim().split('\n').pop().trim();
    const real = JSON.parse(execFileSync(bin, ['snapshot'], { encoding: 'utf8', maxBuffer: 64 << 20 }));
    const processes = real.processes.filter((p) => !p.kernel_thread).slice(0, 25);
    const seqs = new Array(HOSTS).fill(0);
    const snapshotOf = (i) => ({
      ...real,
      processes,
      connections: real.connections.slice(0, 20),
      host: { ...real.host, hostname: `node-${i + 1}`, id: `node-${i + 1}` },
      seq: ++seqs[i],
      taken_at: new Date().toISOString(),
      cpu: { ...real.cpu, total_percent: Math.random() * 100 },
    });
    let next = 0;
    const round = async (count) => {
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let n = 0; n < count / 16; n += 1) {
            const i = next++ % HOSTS;
            await upload(collector.base, key, snapshotOf(i)).catch(() => {});
          }
        }),
      );
    };
    await round(HOSTS);
    let uploads = 0;
    feeder = (async () => {
      while (feeding && RATE > 0) {
        const started = Date.now();
        await round(RATE);
        uploads += RATE;
        await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - started))));
      }
    })();

    const page = await chrome.browser.newPage({ viewport: { width: 1280, height: 720 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${collector.base}/#/fleet`);
    await page.fill('input[name=username]', 'admin');
    await page.fill('input[name=password]', collector.adminPassword);
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-testid=fleet-table] .frow', { timeout: 60_000 });
    await page.waitForFunction(
      (n) => document.querySelector('[data-testid=fleet-counts]')?.textContent?.includes(`${n} hosts`),
      HOSTS,
      { timeout: 60_000 },
    );
    // Busiest first: the order changes with every update, the hardest case.
    await page.click('[data-testid=fleet-table] [data-column=cpu]');
    await page.waitForTimeout(2000);
    const before = uploads;
    const frames = await page.evaluate(async (seconds) => {
      const grid = document.querySelector('[data-testid=fleet-table]');
      const deltas = [];
      let direction = 1;
      const step = 36;
      const max = grid.scrollHeight - grid.clientHeight;
      let position = grid.scrollTop;
      await new Promise((done) => {
        const end = performance.now() + seconds * 1000;
        let last = performance.now();
        const frame = (now) => {
          deltas.push(now - last);
          last = now;
          if (position >= max - step) direction = -1;
          else if (position <= 0) direction = 1;
          position = Math.max(0, Math.min(max, position + direction * step));
          grid.scrollTop = position;
          if (now < end) requestAnimationFrame(frame);
          else done();
        };
        requestAnimationFrame((t) => {
          last = t;
          requestAnimationFrame(frame);
        });
      });
      return deltas;
    }, SECONDS);
    const sorted = [...frames].sort((a, b) => a - b);
    const fmt = (v) => (Math.round(v * 10) / 10).toFixed(1);
    const dropped = frames.filter((d) => d > 16.7 * 1.5).length;
    console.log(
      [
        `fleet machine: ${cpus().length} cpus, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`,
        `fleet binary: ${bin}`,
        `fleet hosts: ${HOSTS}`,
        `fleet uploads while scrolling: ${uploads - before}`,
        `fleet frames: ${frames.length}`,
        `fleet frame p50 ms: ${fmt(percentile(sorted, 50))}`,
        `fleet frame p95 ms: ${fmt(percentile(sorted, 95))}`,
        `fleet frame p99 ms: ${fmt(percentile(sorted, 99))}`,
        `fleet dropped frames: ${dropped} (${fmt((100 * dropped) / Math.max(1, frames.length))}%)`,
        ...(errors.length > 0 ? [`fleet page errors: ${errors.length} (${errors[0]})`] : []),
      ].join('\n'),
    );
    const target = process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target');
    mkdirSync(join(target, 'bench'), { recursive: true });
    const summary = {
      hosts: HOSTS,
      seconds: SECONDS,
      binary: bin,
      uploads_while_scrolling: uploads - before,
      frames: frames.length,
      p50: percentile(sorted, 50),
      p95: percentile(sorted, 95),
      p99: percentile(sorted, 99),
      dropped,
      page_errors: errors.length,
    };
    writeFileSync(join(target, 'bench', 'browser-fleet.json'), `${JSON.stringify(summary, null, 2)}\n`);
    if (errors.length > 0) process.exitCode = 1;
  } finally {
    feeding = false;
    await feeder?.catch(() => {});
    await chrome.close();
    await collector.stop();
  }
}

await main();
