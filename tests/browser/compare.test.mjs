// Hosts compared, as a person sees the chart: two hosts that sample at their own
// instants (as every real fleet does) must be drawn as two lines, not as scattered
// dots. A real `procyon serve --no-local` gets interleaved uploads of two hosts (full
// snapshots of this machine); Debian's Chromium opens History and compares them, and
// the test counts the coloured pixels the chart's canvas holds.
//
//   cargo build && (cd ui && npm run build) && node --test tests/browser/compare.test.mjs
//
// Screenshot: artifacts/compare-lines.png (gitignored).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, launchChromium, procyonBin, startCollector, upload } from './harness.mjs';

let collector;
let chromium;

before(async () => {
  assert.ok(existsSync(join(ROOT, 'ui/dist/index.html')), 'ui/dist is missing: run `npm run build` in ui/');
  collector = await startCollector({ args: ['--no-local'] });
  chromium = await launchChromium();
});

after(async () => {
  await chromium?.close();
  await collector?.stop();
});

test('two hosts compared are two lines', async () => {
  const key = collector.cli(['apikey', 'create', '--name', 'compare']).trim().split('\n').pop().trim();
  const real = JSON.parse(execFileSync(procyonBin(), ['snapshot'], { encoding: 'utf8', maxBuffer: 64 << 20 }));
  const template = { ...real, processes: real.processes.filter((p) => !p.kernel_thread).slice(0, 10), connections: [] };
  // Interleaved: cmp-1, cmp-2, cmp-1, ... 750 ms apart, so no time is shared by both.
  for (let seq = 1; seq <= 14; seq += 1) {
    for (const [i, hostname] of ['cmp-1', 'cmp-2'].entries()) {
      await upload(collector.base, key, {
        ...template,
        host: { ...template.host, hostname, id: hostname },
        seq,
        taken_at: new Date().toISOString(),
        cpu: { ...template.cpu, total_percent: 20 + 40 * i + (seq % 3) },
      });
      await new Promise((r) => setTimeout(r, 750));
    }
  }

  const page = await chromium.browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${collector.base}/#/history?host=cmp-1`);
  await page.fill('input[name=username]', 'admin');
  await page.fill('input[name=password]', collector.adminPassword);
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=compare-query]', { timeout: 30_000 });
  await page.fill('[data-testid=compare-query]', 'cmp-*');
  const chart = page.locator('[data-testid=chart-compare]');
  await chart.waitFor({ timeout: 20_000 });
  await page.waitForFunction(() => Number(document.querySelector('[data-testid=chart-compare]')?.getAttribute('data-points')) >= 28, null, {
    timeout: 20_000,
  });
  await chart.scrollIntoViewIfNeeded();
  await page.waitForTimeout(500);
  mkdirSync(join(ROOT, 'artifacts'), { recursive: true });
  await chart.screenshot({ path: join(ROOT, 'artifacts', 'compare-lines.png') });

  // Series colours are saturated; the grid, axes and text are grey. The columns of the
  // canvas holding such pixels: two lines are one run across the span of the points;
  // lone dots (each host's points, 1.5 s apart) are a run per dot.
  const { runs, span } = await chart.evaluate((el) => {
    const canvas = el.querySelector('canvas');
    const { width, height } = canvas;
    const { data } = canvas.getContext('2d').getImageData(0, 0, width, height);
    const inked = new Array(width).fill(false);
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        const i = (y * width + x) * 4;
        const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
        if (a > 128 && Math.max(r, g, b) - Math.min(r, g, b) > 80) inked[x] = true;
      }
    }
    let runs = 0;
    for (let x = 0; x < width; x += 1) if (inked[x] && (x === 0 || !inked[x - 1])) runs += 1;
    return { runs, span: inked.lastIndexOf(true) - inked.indexOf(true) };
  });
  assert.ok(span > 40, `the points span the chart: ${span} px`);
  assert.ok(runs <= 2, `two lines, not scattered dots: the drawing falls into ${runs} separate runs over ${span} px`);
  assert.deepEqual(errors, []);
});
