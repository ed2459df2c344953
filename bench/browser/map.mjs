// Browser benchmark of the network map: 200 hosts whose processes hold 5,000
// connections to each other's listeners, drawn by the dashboard's Map while some hosts
// send new snapshots every second.
//
// A real `procyon serve --no-local` (release build if there is one) is fed synthetic
// snapshots in the full format (one real `procyon snapshot` of this machine with its
// processes and sockets replaced). Each host has 25 processes, each listening on a port
// of its own and connecting to a listener on another host: 25 edges a host, all across
// hosts. Every second, 20 of the hosts send a new snapshot in which one connection has
// moved to another host, so the live map changes while it is measured. Debian's
// Chromium shows the Map at 1280×720; the figures are how long the first map takes to
// show, and frame times while the map is zoomed in and out every frame (wheel events,
// as a person would) and while it only follows the updates.
//
//   node bench/browser/map.mjs
//
// Environment: PROCYON_BIN, BENCH_MAP_HOSTS (default 200), BENCH_MAP_PER_HOST (default
// 25), BENCH_BROWSER_SECONDS (per phase, default 10), CHROMIUM. It prints lines
// `map ...: N` and writes them to <target>/bench/browser-map.json.

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { ROOT, launchChromium, procyonBin, startCollector, upload } from '../../tests/browser/harness.mjs';

const HOSTS = Number(process.env.BENCH_MAP_HOSTS ?? 200);
const PER_HOST = Number(process.env.BENCH_MAP_PER_HOST ?? 25);
const SECONDS = Number(process.env.BENCH_BROWSER_SECONDS ?? 10);
const UPDATES_PER_SECOND = 20;

function binary() {
  if (process.env.PROCYON_BIN) return process.env.PROCYON_BIN;
  try {
    return procyonBin('release');
  } catch {
    return procyonBin('debug');
  }
}

const hostname = (h) => `map-${h + 1}`;
const address = (h) => `10.${100 + Math.floor(h / 250)}.${h % 250}.1`;

/** Host `h`'s snapshot: its listeners, and one connection from each process to a
 *  listener on another host (`shift` moves one of them, for live changes). */
function hostSnapshot(real, h, seq, shift) {
  const proto = real.processes.find((p) => !p.kernel_thread) ?? real.processes[0];
  const processes = [];
  const connections = [];
  for (let i = 0; i < PER_HOST; i += 1) {
    const pid = 1000 + i;
    processes.push({ ...proto, pid, ppid: null, name: `svc-${i}`, cmd: `svc-${i} --port ${5000 + i}`, kernel_thread: false });
    connections.push({ protocol: 'tcp', local_address: '0.0.0.0', local_port: 5000 + i, remote_address: null, remote_port: null, state: 'LISTEN', pid });
    const moved = i === 0 ? shift : 0;
    const peer = (h + 1 + i * 7 + moved) % HOSTS;
    connections.push({
      protocol: 'tcp',
      local_address: address(h),
      local_port: 40000 + i,
      remote_address: address(peer === h ? (h + 1) % HOSTS : peer),
      remote_port: 5000 + ((i * 3) % PER_HOST),
      state: 'ESTABLISHED',
      pid,
    });
  }
  return {
    ...real,
    host: { ...real.host, id: hostname(h), hostname: hostname(h) },
    seq,
    taken_at: new Date().toISOString(),
    processes,
    connections,
    ports: { by_local_port: [], listening: [] },
  };
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Frame times in the page for `seconds`; with `zoom`, a wheel event every frame. */
async function frames(page, seconds, zoom) {
  return page.evaluate(
    async ({ seconds, zoom }) => {
      const canvas = document.querySelector('[data-testid=network-map]');
      const box = canvas.getBoundingClientRect();
      const deltas = [];
      let longTasks = 0;
      const observer = new PerformanceObserver((list) => (longTasks += list.getEntries().length));
      try {
        observer.observe({ type: 'longtask', buffered: false });
      } catch {
        /* not supported */
      }
      await new Promise((done) => {
        const end = performance.now() + seconds * 1000;
        let last = performance.now();
        let i = 0;
        const frame = (now) => {
          deltas.push(now - last);
          last = now;
          if (zoom) {
            // In for a second, out for a second, about the middle of the map.
            const deltaY = Math.floor(i / 60) % 2 === 0 ? -40 : 40;
            canvas.dispatchEvent(
              new WheelEvent('wheel', { deltaY, clientX: box.x + box.width / 2, clientY: box.y + box.height / 2, bubbles: true, cancelable: true }),
            );
          }
          i += 1;
          if (now < end) requestAnimationFrame(frame);
          else done();
        };
        requestAnimationFrame((t) => {
          last = t;
          requestAnimationFrame(frame);
        });
      });
      observer.disconnect();
      return { deltas, longTasks };
    },
    { seconds, zoom },
  );
}

function summary(run) {
  const sorted = [...run.deltas].sort((a, b) => a - b);
  return {
    frames: run.deltas.length,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? 0,
    dropped: run.deltas.filter((d) => d > 16.7 * 1.5).length,
    long_tasks: run.longTasks,
  };
}

async function main() {
  const bin = binary();
  const real = JSON.parse(execFileSync(bin, ['snapshot'], { encoding: 'utf8', maxBuffer: 64 << 20 }));
  const collector = await startCollector({ bin, args: ['--no-local'] });
  const chrome = await launchChromium();
  let feeding = true;
  let feeder;
  try {
    const key = collector.cli(['apikey', 'create', '--name', 'bench-map']).trim().split('\n').pop().trim();
    const seqs = new Array(HOSTS).fill(1);
    for (let h = 0; h < HOSTS; h += 1) await upload(collector.base, key, hostSnapshot(real, h, seqs[h]++, 0));
    let uploads = 0;
    let round = 0;
    feeder = (async () => {
      while (feeding) {
        const started = Date.now();
        round += 1;
        for (let k = 0; k < UPDATES_PER_SECOND; k += 1) {
          const h = (round * UPDATES_PER_SECOND + k) % HOSTS;
          await upload(collector.base, key, hostSnapshot(real, h, seqs[h]++, round % 3)).catch((e) => console.error('upload failed:', e.message));
          uploads += 1;
        }
        await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - started))));
      }
    })();

    const page = await chrome.browser.newPage({ viewport: { width: 1280, height: 720 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${collector.base}/`);
    await page.fill('input[name=username]', 'admin');
    await page.fill('input[name=password]', collector.adminPassword);
    await page.click('button[type=submit]');
    await page.waitForSelector('nav a:has-text("Map")');
    const opened = Date.now();
    await page.click('nav a:has-text("Map")');
    const edges = HOSTS * PER_HOST;
    await page.waitForFunction(
      (n) => Number(document.querySelector('[data-testid=network-map]')?.getAttribute('data-edges')) >= n,
      edges,
      { timeout: 120_000 },
    );
    const firstMapMs = Date.now() - opened;
    await page.waitForTimeout(2000);
    const beforeZoom = uploads;
    const zoom = summary(await frames(page, SECONDS, true));
    const zoomUpdates = uploads - beforeZoom;
    const beforeIdle = uploads;
    const idle = summary(await frames(page, SECONDS, false));
    const idleUpdates = uploads - beforeIdle;
    mkdirSync(join(ROOT, 'artifacts'), { recursive: true });
    await page.screenshot({ path: join(ROOT, 'artifacts', 'map-bench.png') });
    const drawn = await page.getAttribute('[data-testid=network-map]', 'data-edges');
    const nodes = await page.getAttribute('[data-testid=network-map]', 'data-nodes');

    const fmt = (v) => (Math.round(v * 10) / 10).toFixed(1);
    const lines = [
      `map machine: ${cpus().length} cpus, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`,
      `map hosts: ${HOSTS}`,
      `map nodes drawn: ${nodes}`,
      `map edges drawn: ${drawn}`,
      `map first map ms: ${firstMapMs}`,
      `map zooming frames: ${zoom.frames} (${zoomUpdates} snapshots arrived)`,
      `map zooming frame p50 ms: ${fmt(zoom.p50)}`,
      `map zooming frame p95 ms: ${fmt(zoom.p95)}`,
      `map zooming frame p99 ms: ${fmt(zoom.p99)}`,
      `map zooming dropped frames: ${zoom.dropped}`,
      `map zooming long tasks: ${zoom.long_tasks}`,
      `map live frames: ${idle.frames} (${idleUpdates} snapshots arrived)`,
      `map live frame p50 ms: ${fmt(idle.p50)}`,
      `map live frame p95 ms: ${fmt(idle.p95)}`,
      `map live frame p99 ms: ${fmt(idle.p99)}`,
      `map live frame max ms: ${fmt(idle.max)}`,
      `map live dropped frames: ${idle.dropped}`,
      `map live long tasks: ${idle.long_tasks}`,
    ];
    if (errors.length > 0) lines.push(`map page errors: ${errors.length} (${errors[0]})`);
    console.log(lines.join('\n'));
    const target = process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target');
    mkdirSync(join(target, 'bench'), { recursive: true });
    writeFileSync(
      join(target, 'bench', 'browser-map.json'),
      `${JSON.stringify({ hosts: HOSTS, per_host: PER_HOST, seconds: SECONDS, binary: bin, first_map_ms: firstMapMs, zoom, live: idle }, null, 2)}\n`,
    );
    if (errors.length > 0) process.exitCode = 1;
  } finally {
    feeding = false;
    await feeder?.catch(() => {});
    await chrome.close();
    await collector.stop();
  }
}

await main();
