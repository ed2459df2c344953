// Browser benchmark of the dashboard: frame times while scrolling the process table
// of a host with 2,000 processes that change every second, and the size of the
// dashboard's JavaScript, gzipped.
//
// A real `procyon serve --no-local` (release build if there is one) is fed synthetic
// snapshots in the full format: one real `procyon snapshot` of this machine with its
// processes multiplied to 2,000 (a realistic tree, changing CPU and memory every
// second). Debian's Chromium shows the dashboard at 1280×720 and scrolls the table
// steadily while updates arrive; requestAnimationFrame timestamps give the frame times.
//
//   node bench/browser/bench.mjs
//
// Environment: PROCYON_BIN (the binary), BENCH_BROWSER_SECONDS (scrolling time per
// layout, default 10), BENCH_PROCESSES (default 2000), CHROMIUM. It prints lines
// `dashboard ...: N` and writes the same figures to <target>/bench/browser.json.

import { mkdirSync, readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync, constants } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { ROOT, launchChromium, procyonBin, startCollector, upload } from '../../tests/browser/harness.mjs';

const SECONDS = Number(process.env.BENCH_BROWSER_SECONDS ?? 10);
const PROCESSES = Number(process.env.BENCH_PROCESSES ?? 2000);
const HOST = `bench-${PROCESSES}`;

function binary() {
  if (process.env.PROCYON_BIN) return process.env.PROCYON_BIN;
  try {
    return procyonBin('release');
  } catch {
    return procyonBin('debug');
  }
}

/** Bytes of the dashboard's JavaScript, gzipped at the level the build uses: the
 *  entry (needed before anything shows) and all of it (charts load on first use). */
function bundleSizes() {
  const dist = join(ROOT, 'ui', 'dist');
  if (!existsSync(join(dist, 'index.html'))) throw new Error('ui/dist is missing: run `npm ci && npm run build` in ui/');
  const html = readFileSync(join(dist, 'index.html'), 'utf8');
  const entry = /<script[^>]+src="\/(assets\/[^"]+\.js)"/.exec(html)[1];
  const gz = (file) => gzipSync(readFileSync(join(dist, file)), { level: constants.Z_BEST_COMPRESSION }).length;
  const all = readdirSync(join(dist, 'assets')).filter((f) => f.endsWith('.js'));
  const css = readdirSync(join(dist, 'assets')).filter((f) => f.endsWith('.css'));
  return {
    entry: gz(entry),
    js: all.reduce((n, f) => n + gz(`assets/${f}`), 0),
    css: css.reduce((n, f) => n + gz(`assets/${f}`), 0),
  };
}

/** A deterministic pseudo-random sequence, so runs are comparable. */
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** A command line fit for upload: this machine's may hold control characters (the
 *  collector refuses those) and be near the length limit (a suffix is added). */
function clean(cmd) {
  // eslint-disable-next-line no-control-regex
  return Array.from(cmd.replace(/[\u0000-\u001f\u007f]/g, ' ')).slice(0, 3800).join('');
}

/** A real snapshot of this machine, grown to `count` processes in a plausible tree. */
function template(bin, count) {
  const real = JSON.parse(execFileSync(bin, ['snapshot'], { encoding: 'utf8', maxBuffer: 64 << 20 }));
  const random = rng(42);
  const base = real.processes.filter((p) => !p.kernel_thread).map((p) => ({ ...p, cmd: clean(p.cmd), name: clean(p.name) }));
  const kernel = real.processes.filter((p) => p.kernel_thread);
  const processes = [];
  // pid 1 and a few kernel threads as they are, then user processes under earlier ones.
  processes.push({ ...(real.processes.find((p) => p.pid === 1) ?? base[0]), pid: 1, ppid: null });
  for (const k of kernel.slice(0, Math.min(kernel.length, Math.floor(count * 0.1)))) processes.push({ ...k });
  // Made-up pids start past every real one kept (kernel threads may run past 1000):
  // pids are unique in a snapshot, or the upload is refused.
  let pid = Math.max(1000, ...processes.map((p) => p.pid)) + 1;
  while (processes.length < count) {
    const model = base[Math.floor(random() * base.length)];
    const candidates = processes.filter((p) => !p.kernel_thread);
    const parent = candidates[Math.floor(Math.pow(random(), 2) * candidates.length)];
    processes.push({
      ...model,
      pid: pid++,
      ppid: parent.pid,
      name: `${model.name}-${processes.length}`,
      cmd: `${clean(model.cmd || model.name)} --worker ${processes.length}`,
    });
  }
  const connections = [];
  for (let i = 0; i < 400; i += 1) {
    connections.push({
      protocol: 'tcp',
      local_address: '10.0.0.5',
      local_port: 40000 + i,
      remote_address: `10.0.${i % 7}.${i % 250}`,
      remote_port: [443, 5432, 6379, 80][i % 4],
      state: i % 9 === 0 ? 'TIME_WAIT' : 'ESTABLISHED',
      pid: processes[(i * 7) % processes.length].pid,
    });
  }
  return { ...real, host: { ...real.host, hostname: HOST, id: HOST }, processes, connections: [...real.connections, ...connections] };
}

/** The next second's snapshot: every figure moves a little, as on a busy machine. */
function tick(snapshot, seq, random) {
  const processes = snapshot.processes.map((p) => {
    if (p.kernel_thread) return p;
    const hot = random() < 0.02;
    return {
      ...p,
      cpu_percent: hot ? 40 + random() * 120 : random() * random() * 8,
      memory_percent: Math.max(0, p.memory_percent + (random() - 0.5) * 0.05),
      rss_bytes: Math.max(1 << 20, Math.round(p.rss_bytes * (0.98 + random() * 0.04))),
    };
  });
  return {
    ...snapshot,
    seq,
    taken_at: new Date().toISOString(),
    cpu: { ...snapshot.cpu, total_percent: 20 + random() * 50, per_core_percent: snapshot.cpu.per_core_percent.map(() => random() * 100) },
    processes,
  };
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main() {
  const bin = binary();
  const sizes = bundleSizes();
  const collector = await startCollector({ bin, args: ['--no-local', '--interval', '1'] });
  const chrome = await launchChromium();
  let feeding = true;
  let feeder;
  try {
    const key = collector.cli(['apikey', 'create', '--name', 'bench']).trim().split('\n').pop().trim();
    const random = rng(7);
    let snapshot = template(bin, PROCESSES);
    let seq = 1;
    let uploads = 0;
    await upload(collector.base, key, tick(snapshot, seq++, random));
    // One snapshot a second, as an agent at a 1 s interval would send.
    feeder = (async () => {
      while (feeding) {
        const started = Date.now();
        snapshot = tick(snapshot, seq++, random);
        await upload(collector.base, key, snapshot).catch((e) => console.error('upload failed:', e.message));
        uploads += 1;
        await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - started))));
      }
    })();

    const page = await chrome.browser.newPage({ viewport: { width: 1280, height: 720 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${collector.base}/#/processes?host=${HOST}`);
    await page.fill('input[name=username]', 'admin');
    await page.fill('input[name=password]', collector.adminPassword);
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-testid=process-table] .prow', { timeout: 60_000 });
    await page.waitForFunction(
      (n) => document.querySelector('[data-testid=process-count]')?.textContent?.replace(/\D/g, '') === String(n),
      PROCESSES,
      { timeout: 60_000 },
    );
    await page.waitForTimeout(2000); // let the first updates settle

    const results = {};
    for (const layout of ['list', 'tree']) {
      if (layout === 'tree') {
        await page.click('[data-testid=mode-tree]');
        await page.waitForTimeout(1500);
      }
      const before = uploads;
      // In the page: scroll the table a little every frame, down and back up, and keep
      // each frame's time; updates keep arriving meanwhile.
      const frames = await page.evaluate(async (seconds) => {
        const grid = document.querySelector('[data-testid=process-table]');
        const deltas = [];
        let longTasks = 0;
        let longTaskMs = 0;
        const observer = new PerformanceObserver((list) => {
          for (const e of list.getEntries()) {
            longTasks += 1;
            longTaskMs += e.duration;
          }
        });
        try {
          observer.observe({ type: 'longtask', buffered: false });
        } catch {
          /* not supported */
        }
        let direction = 1;
        const step = 36; // px per frame: about 2,000 px (75 rows) a second
        // The position is kept here rather than read back from the element each frame:
        // reading layout after writing it would force an extra layout that a wheel or
        // touch scroll does not cause.
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
        observer.disconnect();
        return { deltas, longTasks, longTaskMs };
      }, SECONDS);
      const sorted = [...frames.deltas].sort((a, b) => a - b);
      // Over budget: longer than one 60 Hz frame, allowing 0.5 ms of timer jitter.
      const over = frames.deltas.filter((d) => d > 17.2).length;
      // A frame that took longer than one and a half vsyncs means one was missed.
      const dropped = frames.deltas.filter((d) => d > 16.7 * 1.5).length;
      results[layout] = {
        frames: frames.deltas.length,
        updates: uploads - before,
        p50: percentile(sorted, 50),
        p95: percentile(sorted, 95),
        p99: percentile(sorted, 99),
        max: sorted[sorted.length - 1] ?? 0,
        over_16_7: over,
        dropped,
        long_tasks: frames.longTasks,
        long_task_ms: frames.longTaskMs,
      };
    }

    const r = results.list;
    const t = results.tree;
    const fmt = (v) => (Math.round(v * 10) / 10).toFixed(1);
    const lines = [
      `dashboard machine: ${cpus().length} cpus, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`,
      `dashboard processes: ${PROCESSES}`,
      `dashboard updates while scrolling: ${r.updates}`,
      `dashboard frames: ${r.frames}`,
      `dashboard frame p50 ms: ${fmt(r.p50)}`,
      `dashboard frame p95 ms: ${fmt(r.p95)}`,
      `dashboard frame p99 ms: ${fmt(r.p99)}`,
      `dashboard frame max ms: ${fmt(r.max)}`,
      `dashboard frames over 16.7 ms: ${r.over_16_7} (${fmt((100 * r.over_16_7) / Math.max(1, r.frames))}%)`,
      `dashboard dropped frames: ${r.dropped}`,
      `dashboard long tasks: ${r.long_tasks} (${fmt(r.long_task_ms)} ms)`,
      `dashboard tree frame p95 ms: ${fmt(t.p95)}`,
      `dashboard tree frame p99 ms: ${fmt(t.p99)}`,
      `dashboard tree dropped frames: ${t.dropped}`,
      `dashboard bundle gzip bytes: ${sizes.js}`,
      `dashboard initial js gzip bytes: ${sizes.entry}`,
      `dashboard css gzip bytes: ${sizes.css}`,
    ];
    if (errors.length > 0) lines.push(`dashboard page errors: ${errors.length} (${errors[0]})`);
    console.log(lines.join('\n'));

    const target = process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target');
    mkdirSync(join(target, 'bench'), { recursive: true });
    writeFileSync(
      join(target, 'bench', 'browser.json'),
      `${JSON.stringify({ processes: PROCESSES, seconds: SECONDS, binary: bin, list: r, tree: t, bundle_gzip_bytes: sizes }, null, 2)}\n`,
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
