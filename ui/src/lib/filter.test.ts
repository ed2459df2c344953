// Search and filters of the process and connection tables.

import { describe, expect, it } from 'vitest';
import type { ConnectionRow } from './filter';
import { compileConnectionQuery, compileProcessQuery, parseSize, statusesMatching, tokenize } from './filter';
import { conn, proc } from './testing/fixtures';
import type { ProcessSample } from './model';
// Cases shared with `procyon watch` (src-tauri/src/tui/filter.rs), so that the two
// implementations of the language cannot drift apart.
import shared from '../../../tests/fixtures/filter-cases.json';

const procs = [
  proc(1, null, { name: 'systemd', user: 'root', cmd: '/sbin/init splash', cpu_percent: 0.5, memory_percent: 0.2, rss_bytes: 12 * 1024 ** 2 }),
  proc(812, 1, { name: 'postgres', user: 'postgres', cmd: 'postgres -D /var/lib/pg --port 5432', status: 'running', cpu_percent: 73, memory_percent: 12.5, rss_bytes: 900 * 1024 ** 2, threads: 40 }),
  proc(4242, 1, { name: 'sleep', user: 'alice', cmd: 'sleep 600', status: 'stopped', cpu_percent: 0, memory_percent: 0.01 }),
  proc(9000, 812, { name: 'kworker/0:1', user: 'root', cmd: '', kernel_thread: true, status: 'idle' }),
];

const run = (q: string) => {
  const c = compileProcessQuery(q);
  return { pids: c.test ? procs.filter(c.test).map((p) => p.pid) : procs.map((p) => p.pid), errors: c.errors };
};

describe('tokenize', () => {
  const fields = new Set(['user', 'cpu']);
  it('splits words and keeps quoted spaces', () => {
    expect(tokenize('  a  "b c" user:root ', fields).map((t) => t.value)).toEqual(['a', 'b c', 'root']);
    expect(tokenize('user:"John Smith"', fields)[0]).toMatchObject({ field: 'user', value: 'John Smith' });
  });
  it('recognises filters and negation', () => {
    expect(tokenize('cpu>=5', fields)[0]).toMatchObject({ field: 'cpu', op: '>=', value: '5', negated: false });
    expect(tokenize('-user:root', fields)[0]).toMatchObject({ field: 'user', negated: true });
    expect(tokenize('!foo', fields)[0]).toMatchObject({ field: null, value: 'foo', negated: true });
  });
  it('leaves unknown fields and dashes as text', () => {
    expect(tokenize('http://x', fields)[0]).toMatchObject({ field: null, value: 'http://x' });
    expect(tokenize('--verbose', fields)[0]).toMatchObject({ field: null, value: '--verbose', negated: false });
  });
});

describe('process search', () => {
  it('shows everything for an empty query', () => {
    expect(compileProcessQuery('   ').test).toBeNull();
  });
  it('finds by name, user, command line and pid, ignoring case', () => {
    expect(run('POST').pids).toEqual([812]);
    expect(run('alice').pids).toEqual([4242]);
    expect(run('splash').pids).toEqual([1]);
    expect(run('4242').pids).toEqual([4242]);
    expect(run('--port').pids).toEqual([812]);
  });
  it('requires every word', () => {
    expect(run('root init').pids).toEqual([1]);
    expect(run('root nothing-like-this').pids).toEqual([]);
  });
  it('filters by user exactly', () => {
    expect(run('user:root').pids).toEqual([1, 9000]);
    expect(run('user:ROOT,alice').pids).toEqual([1, 4242, 9000]);
    expect(run('-user:root').pids).toEqual([812, 4242]);
  });
  it('compares figures', () => {
    expect(run('cpu>50').pids).toEqual([812]);
    expect(run('cpu<1').pids).toEqual([1, 4242, 9000]);
    expect(run('mem>10').pids).toEqual([812]);
    expect(run('mem>=0.2 mem<=1').pids).toEqual([1]);
    expect(run('threads>10').pids).toEqual([812]);
    expect(run('rss>500M').pids).toEqual([812]);
    expect(run('rss<1G rss>1M').pids).toEqual([1, 812]);
    expect(run('cpu:70').pids).toEqual([812]);
  });
  it('filters by status, by word, prefix or letter', () => {
    expect(run('status:stopped').pids).toEqual([4242]);
    expect(run('status:stop').pids).toEqual([4242]);
    expect(run('status:T').pids).toEqual([4242]);
    expect(run('status:running,idle').pids).toEqual([812, 9000]);
    expect(run('user:root cpu>50 mem>10 status:stopped').pids).toEqual([]);
  });
  it('filters by pid, ppid and kernel threads', () => {
    expect(run('pid:812').pids).toEqual([812]);
    expect(run('ppid:1').pids).toEqual([812, 4242]);
    expect(run('pid>1000').pids).toEqual([4242, 9000]);
    expect(run('is:kernel').pids).toEqual([9000]);
    expect(run('-is:kernel').pids).toEqual([1, 812, 4242]);
  });
  it('reports malformed filters and ignores them', () => {
    const r = run('cpu>lots postgres');
    expect(r.pids).toEqual([812]);
    expect(r.errors[0]).toContain('cpu needs a number');
    expect(run('status:flying').errors[0]).toContain('no such status');
    expect(run('user:').errors[0]).toContain('needs a value');
    expect(run('name>3').errors[0]).toContain('is text');
  });
  it('treats hostile text as plain text', () => {
    const evil = [proc(1, null, { name: '<img src=x onerror=alert(1)>' })];
    const c = compileProcessQuery('<img');
    expect(evil.filter(c.test!)).toHaveLength(1);
    expect(() => compileProcessQuery('((((( [[[ \\ .* +?')).not.toThrow();
  });
});

describe('the cases shared with procyon watch', () => {
  const defaults = shared.defaults as ProcessSample;
  const all = shared.processes.map((patch) => ({ ...defaults, ...patch }) as ProcessSample);
  it('has enough of them to mean something', () => {
    expect(shared.cases.length).toBeGreaterThan(30);
  });
  for (const c of shared.cases) {
    it(`${JSON.stringify(c.query)} keeps ${JSON.stringify(c.pids)}`, () => {
      const compiled = compileProcessQuery(c.query);
      const kept = compiled.test ? all.filter(compiled.test) : all;
      expect(kept.map((p) => p.pid)).toEqual(c.pids);
      expect(compiled.errors).toEqual(c.errors);
    });
  }
});

describe('sizes and statuses', () => {
  it('parses sizes', () => {
    expect(parseSize('500')).toBe(500);
    expect(parseSize('1.5k')).toBe(1536);
    expect(parseSize('2MiB')).toBe(2 * 1024 ** 2);
    expect(parseSize('1G')).toBe(1024 ** 3);
    expect(parseSize('3MB/s')).toBe(3 * 1024 ** 2);
    expect(parseSize('lots')).toBeNull();
    expect(parseSize('5 parsecs')).toBeNull();
  });
  it('maps status words', () => {
    expect(statusesMatching('disk')).toEqual(['disk_sleep']);
    expect(statusesMatching('D')).toEqual(['disk_sleep']);
    expect(statusesMatching('disksleep')).toEqual(['disk_sleep']);
  });
});

describe('connection search', () => {
  const rows: ConnectionRow[] = [
    { conn: conn({ local_port: 5432, pid: 812 }), processName: 'postgres' },
    { conn: conn({ local_port: 40000, remote_address: '10.0.0.7', remote_port: 443, state: 'ESTABLISHED', pid: 4242 }), processName: 'curl' },
    { conn: conn({ protocol: 'udp', local_address: '::', local_port: 53, state: null, pid: null }), processName: null },
  ];
  const find = (q: string) => {
    const c = compileConnectionQuery(q);
    return c.test ? rows.filter(c.test).map((r) => r.conn.local_port) : rows.map((r) => r.conn.local_port);
  };
  it('filters by state, protocol, port, pid, address and process', () => {
    expect(find('state:listen')).toEqual([5432]);
    expect(find('state:udp')).toEqual([53]);
    expect(find('proto:udp')).toEqual([53]);
    expect(find('port:443')).toEqual([40000]);
    expect(find('lport:5432')).toEqual([5432]);
    expect(find('pid:4242')).toEqual([40000]);
    expect(find('addr:10.0.0')).toEqual([40000]);
    expect(find('process:post')).toEqual([5432]);
  });
  it('matches free text anywhere', () => {
    expect(find('10.0.0.7:443')).toEqual([40000]);
    expect(find('established')).toEqual([40000]);
    expect(find('curl')).toEqual([40000]);
    expect(find('812')).toEqual([5432]);
  });
});
