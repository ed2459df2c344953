/// <reference types="vitest/config" />
// Build of the dashboard. The collector embeds `dist/` in its binary (see
// src-tauri/src/server/assets.rs), so the output must work under its strict
// Content-Security-Policy: no inline scripts or styles, everything from 'self'. The
// desktop app loads the same `dist/` from its own protocol, with two pages: the
// dashboard (`index.html`) and the quick view (`quick.html`, the small window).
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync, constants } from 'node:zlib';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig, type Plugin } from 'vite';

/** Writes `NAME.gz` next to each compressible file, so the collector can serve
 *  pre-compressed assets without compressing on every request (or a compression
 *  dependency). Only written when it is actually smaller. */
function precompress(): Plugin {
  let outDir = 'dist';
  return {
    name: 'procyon-precompress',
    apply: 'build',
    configResolved(config) {
      outDir = config.build.outDir;
    },
    closeBundle() {
      const walk = (dir: string): string[] =>
        readdirSync(dir).flatMap((name) => {
          const path = join(dir, name);
          return statSync(path).isDirectory() ? walk(path) : [path];
        });
      for (const path of walk(outDir)) {
        if (!/\.(js|css|html|svg|json|txt)$/.test(path)) continue;
        const raw = readFileSync(path);
        if (raw.length < 1024) continue;
        const gz = gzipSync(raw, { level: constants.Z_BEST_COMPRESSION });
        if (gz.length < raw.length * 0.9) writeFileSync(`${path}.gz`, gz);
      }
    },
  };
}

export default defineConfig({
  plugins: [svelte(), precompress()],
  // Served from the collector's root.
  base: '/',
  build: {
    target: 'es2022',
    // Assets are never inlined as data: URLs into scripts; the CSP allows images from
    // 'self' and data:, but keeping files separate keeps caching simple.
    assetsInlineLimit: 0,
    // The collector serves the `index.html` fallback itself; no preload polyfill is
    // needed for the browsers we target and it would be one more script to audit.
    modulePreload: { polyfill: false },
    reportCompressedSize: true,
    chunkSizeWarningLimit: 400,
    rolldownOptions: {
      input: {
        main: fileURLToPath(new URL('./index.html', import.meta.url)),
        quick: fileURLToPath(new URL('./quick.html', import.meta.url)),
      },
    },
  },
  server: {
    // `npm run dev` against a collector on the default port: the API and WebSockets
    // are proxied so the dashboard runs same-origin, as in production.
    proxy: {
      '/api': 'http://127.0.0.1:7450',
      '/ws': { target: 'ws://127.0.0.1:7450', ws: true },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
    env: { TZ: 'UTC' },
  },
});
