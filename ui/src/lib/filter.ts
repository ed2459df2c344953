// Search and filters for the process and connection tables. A query is words separated
// by spaces (double quotes keep spaces in a word). A word is either free text, matched
// anywhere (name, pid, user, command line), or a filter such as `user:root`, `cpu>50`,
// `mem>=10`, `rss>500M`, `status:stopped,zombie`, `pid:1234`, `container:web` (a
// container's name, or the start of its id). A filter is negated by a
// leading `!` or `-` (`-user:root`). All words must hold. A word that looks like a filter
// but is malformed (`cpu>lots`) is reported and ignored, so typing never empties the
// table by surprise.

import type { ConnectionSample, ProcessSample, ProcessStatus } from './model';

type Op = ':' | '=' | '>' | '>=' | '<' | '<=';

/** One word of a query. */
export interface Token {
  negated: boolean;
  field: string | null;
  op: Op | null;
  value: string;
  /** The word as typed, for messages. */
  raw: string;
}

const FILTER = /^([A-Za-z_]+)(>=|<=|:|=|>|<)(.*)$/s;

/** Splits a query into words, keeping quoted spaces. An unknown `field:` is not a
 *  filter (a URL such as `http://host` is text to search for). */
export function tokenize(query: string, fields: ReadonlySet<string>): Token[] {
  const words: string[] = [];
  let current = '';
  let quoted = false;
  let started = false;
  for (const ch of query) {
    if (ch === '"') {
      quoted = !quoted;
      started = true;
      continue;
    }
    if (!quoted && /\s/.test(ch)) {
      if (started) words.push(current);
      current = '';
      started = false;
      continue;
    }
    current += ch;
    started = true;
  }
  if (started) words.push(current);

  return words
    .filter((w) => w.length > 0)
    .map((raw) => {
      let word = raw;
      let negated = false;
      // `!` negates anything; `-` only a filter, so `--verbose` stays searchable text.
      if (word.length > 1 && word.startsWith('!')) {
        negated = true;
        word = word.slice(1);
      } else if (word.startsWith('-')) {
        const f = FILTER.exec(word.slice(1));
        if (f && fields.has(f[1].toLowerCase())) {
          negated = true;
          word = word.slice(1);
        }
      }
      const f = FILTER.exec(word);
      if (f && fields.has(f[1].toLowerCase())) {
        return { negated, field: f[1].toLowerCase(), op: f[2] as Op, value: f[3], raw };
      }
      return { negated, field: null, op: null, value: word, raw };
    })
    .filter((t) => t.value.length > 0 || t.field !== null);
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/** `500M`, `1.5GiB`, `2048` as bytes; `null` when it is not a size. */
export function parseSize(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)(?:\/s)?$/i.exec(text.trim());
  if (!m) return null;
  const factor = SIZE_UNITS[m[2].toLowerCase()];
  return factor === undefined ? null : Number(m[1]) * factor;
}

function parseNumber(text: string): number | null {
  const t = text.trim().replace(/%$/, '');
  if (!/^-?\d+(\.\d+)?$/.test(t)) return null;
  return Number(t);
}

function compare(value: number | null, op: Op, target: number): boolean {
  if (value == null) return false;
  switch (op) {
    case '>':
      return value > target;
    case '>=':
      return value >= target;
    case '<':
      return value < target;
    case '<=':
      return value <= target;
    case '=':
      return value === target;
    case ':':
      return value >= target;
  }
}

/** What a query compiled to. `test` is `null` for an empty query (show everything). */
export interface CompiledQuery<T> {
  test: ((item: T) => boolean) | null;
  errors: string[];
}

type Predicate<T> = (item: T) => boolean;

interface NumericField<T> {
  kind: 'number' | 'size' | 'id';
  get: (item: T) => number | null;
  example: string;
}
interface TextField<T> {
  kind: 'text' | 'exact';
  get: (item: T) => string | null;
}
interface CustomField<T> {
  kind: 'custom';
  /** The predicate, or what is wrong with the word. */
  build: (value: string, op: Op, raw: string) => Predicate<T> | string;
}
type Field<T> = NumericField<T> | TextField<T> | CustomField<T>;

function compileWith<T>(
  query: string,
  fields: Record<string, Field<T>>,
  freeText: (needle: string) => Predicate<T>,
): CompiledQuery<T> {
  const names = new Set(Object.keys(fields));
  const tokens = tokenize(query, names);
  const errors: string[] = [];
  const preds: Predicate<T>[] = [];
  for (const token of tokens) {
    let pred: Predicate<T> | null = null;
    if (token.field === null) {
      pred = freeText(token.value.toLowerCase());
    } else {
      const field = fields[token.field];
      const op = token.op ?? ':';
      const value = token.value;
      if (value === '') {
        errors.push(`“${token.raw}” needs a value after ${token.field}${op}`);
        continue;
      }
      if (field.kind === 'custom') {
        const built = field.build(value, op, token.raw);
        if (typeof built === 'string') {
          errors.push(built);
          continue;
        }
        pred = built;
      } else if (field.kind === 'text' || field.kind === 'exact') {
        if (op !== ':' && op !== '=') {
          errors.push(`“${token.raw}”: ${token.field} is text; use ${token.field}:value`);
          continue;
        }
        const wanted = value.toLowerCase().split(',').filter(Boolean);
        const exact = field.kind === 'exact' || op === '=';
        const get = field.get;
        pred = (item) => {
          const v = get(item);
          if (v == null) return false;
          const lower = v.toLowerCase();
          return wanted.some((w) => (exact ? lower === w : lower.includes(w)));
        };
      } else {
        const numeric = field as NumericField<T>;
        const parts = value.split(',');
        const targets = parts.map((p) => (numeric.kind === 'size' ? parseSize(p) : parseNumber(p)));
        if (targets.some((t) => t === null)) {
          errors.push(`“${token.raw}”: ${token.field} needs a ${numeric.kind === 'size' ? 'size' : 'number'}, e.g. ${numeric.example}`);
          continue;
        }
        // For ids `:` means "is"; for measures it means "at least".
        const effective: Op = numeric.kind === 'id' && op === ':' ? '=' : op;
        const get = numeric.get;
        pred = (item) => targets.some((t) => compare(get(item), effective, t!));
      }
    }
    if (token.negated) {
      const inner = pred;
      preds.push((item) => !inner(item));
    } else {
      preds.push(pred);
    }
  }
  if (preds.length === 0) return { test: null, errors };
  if (preds.length === 1) return { test: preds[0], errors };
  return { test: (item) => preds.every((p) => p(item)), errors };
}

// ---------------------------------------------------------------------------------------
// Processes

const STATUS_LETTERS: Record<string, ProcessStatus> = {
  r: 'running',
  s: 'sleeping',
  d: 'disk_sleep',
  t: 'stopped',
  z: 'zombie',
  i: 'idle',
  x: 'dead',
};

const STATUSES: ProcessStatus[] = [
  'running',
  'sleeping',
  'disk_sleep',
  'stopped',
  'tracing_stop',
  'zombie',
  'dead',
  'idle',
  'parked',
  'waking',
  'unknown',
];

/** `stopped`, `stop`, `T`, `disk` → the statuses meant. */
export function statusesMatching(word: string): ProcessStatus[] {
  const w = word.toLowerCase().replace(/[\s-]/g, '_');
  if (w.length === 1 && STATUS_LETTERS[w]) return [STATUS_LETTERS[w]];
  return STATUSES.filter((s) => s.startsWith(w) || s.replace('_', '') === w);
}

const PROCESS_FIELDS: Record<string, Field<ProcessSample>> = {
  name: { kind: 'text', get: (p) => p.name },
  cmd: { kind: 'text', get: (p) => p.cmd },
  command: { kind: 'text', get: (p) => p.cmd },
  user: { kind: 'exact', get: (p) => p.user },
  pid: { kind: 'id', get: (p) => p.pid, example: 'pid:1234' },
  ppid: { kind: 'id', get: (p) => p.ppid, example: 'ppid:1' },
  cpu: { kind: 'number', get: (p) => p.cpu_percent, example: 'cpu>50' },
  mem: { kind: 'number', get: (p) => p.memory_percent, example: 'mem>10' },
  memory: { kind: 'number', get: (p) => p.memory_percent, example: 'memory>10' },
  rss: { kind: 'size', get: (p) => p.rss_bytes, example: 'rss>500M' },
  threads: { kind: 'number', get: (p) => p.threads, example: 'threads>100' },
  read: { kind: 'size', get: (p) => p.disk_read_bytes_per_sec, example: 'read>1M' },
  write: { kind: 'size', get: (p) => p.disk_write_bytes_per_sec, example: 'write>1M' },
  status: {
    kind: 'custom',
    build: (value) => {
      const wanted = new Set(value.split(',').filter(Boolean).flatMap(statusesMatching));
      if (wanted.size === 0) return `“status:${value}”: no such status; try running, sleeping, stopped, zombie`;
      return (p) => wanted.has(p.status);
    },
  },
  is: {
    kind: 'custom',
    build: (value) => {
      if (value.toLowerCase() === 'kernel') return (p) => p.kernel_thread;
      return `“is:${value}”: the only one is is:kernel (and -is:kernel)`;
    },
  },
  container: {
    kind: 'custom',
    build: (value, op, raw) => {
      if (op !== ':' && op !== '=') return `“${raw}”: container is a name or id; use container:NAME`;
      const wanted = value.toLowerCase().split(',').filter(Boolean);
      return (p) => {
        const c = p.container;
        if (!c) return false;
        const name = c.name?.toLowerCase();
        const id = c.id.toLowerCase();
        return wanted.some((w) => name === w || id.startsWith(w));
      };
    },
  },
};
PROCESS_FIELDS.state = PROCESS_FIELDS.status;

/** Compiles a process query. */
export function compileProcessQuery(query: string): CompiledQuery<ProcessSample> {
  return compileWith(query, PROCESS_FIELDS, (needle) => {
    const asPid = /^\d+$/.test(needle) ? Number(needle) : null;
    return (p) =>
      p.pid === asPid ||
      p.name.toLowerCase().includes(needle) ||
      (p.user !== null && p.user.toLowerCase().includes(needle)) ||
      p.cmd.toLowerCase().includes(needle);
  });
}

// ---------------------------------------------------------------------------------------
// Connections

/** A socket with its owner's name, as the connections table shows it. */
export interface ConnectionRow {
  conn: ConnectionSample;
  processName: string | null;
}

const CONNECTION_FIELDS: Record<string, Field<ConnectionRow>> = {
  proto: { kind: 'exact', get: (r) => r.conn.protocol },
  protocol: { kind: 'exact', get: (r) => r.conn.protocol },
  state: { kind: 'text', get: (r) => r.conn.state ?? (r.conn.protocol === 'udp' ? 'udp' : null) },
  status: { kind: 'text', get: (r) => r.conn.state },
  pid: { kind: 'id', get: (r) => r.conn.pid, example: 'pid:1234' },
  lport: { kind: 'id', get: (r) => r.conn.local_port, example: 'lport:443' },
  rport: { kind: 'id', get: (r) => r.conn.remote_port, example: 'rport:443' },
  port: {
    kind: 'custom',
    build: (value) => {
      const ports = value.split(',').map(Number);
      if (ports.some((p) => !Number.isInteger(p) || p < 0 || p > 65535)) return `“port:${value}”: a port is 0 to 65535`;
      return (r) => ports.includes(r.conn.local_port) || (r.conn.remote_port !== null && ports.includes(r.conn.remote_port));
    },
  },
  addr: {
    kind: 'custom',
    build: (value) => {
      const v = value.toLowerCase();
      return (r) => r.conn.local_address.toLowerCase().includes(v) || (r.conn.remote_address ?? '').toLowerCase().includes(v);
    },
  },
  process: { kind: 'text', get: (r) => r.processName },
  name: { kind: 'text', get: (r) => r.processName },
};
CONNECTION_FIELDS.ip = CONNECTION_FIELDS.addr;

/** Compiles a connection query. Free text matches addresses, ports, state, protocol,
 *  pid and process name. */
export function compileConnectionQuery(query: string): CompiledQuery<ConnectionRow> {
  return compileWith(query, CONNECTION_FIELDS, (needle) => (r) => {
    const c = r.conn;
    return (
      `${c.local_address}:${c.local_port}`.toLowerCase().includes(needle) ||
      (c.remote_address !== null && `${c.remote_address}:${c.remote_port ?? ''}`.toLowerCase().includes(needle)) ||
      (c.state ?? '').toLowerCase().includes(needle) ||
      c.protocol === needle ||
      (c.pid !== null && String(c.pid) === needle) ||
      (r.processName !== null && r.processName.toLowerCase().includes(needle))
    );
  });
}
