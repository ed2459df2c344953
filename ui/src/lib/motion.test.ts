// Meters and bars take a new figure every second. A transition on their size keeps
// WebKit drawing frames for a good part of every second: with the desktop window open
// that was most of its CPU. They jump to the new size instead; a transition
// on colours (a hover) is fine, as it runs only when the pointer moves.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SRC = fileURLToPath(new URL('..', import.meta.url));

function styleFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return styleFiles(path);
    return /\.(svelte|css)$/.test(name) ? [path] : [];
  });
}

describe('motion', () => {
  it('does not animate sizes or transforms', () => {
    const offenders: string[] = [];
    for (const file of styleFiles(SRC)) {
      // Every `transition` declaration (shorthand or longhand) up to its semicolon.
      for (const m of readFileSync(file, 'utf8').matchAll(/transition(?:-property)?\s*:([^;]*);/g)) {
        if (/\b(all|transform|width|height|scale)\b/.test(m[1])) offenders.push(`${file}: ${m[0].trim()}`);
      }
    }
    expect(offenders).toEqual([]);
  });
});
