// Alert rules as the dashboard edits them: the metrics a rule can watch, a form's values
// turned into the rule the collector takes (and back), the checks made before sending
// (the collector checks again and names the field at fault), and the rule that "alert me
// when this goes away" makes from a process.

import type { AlertChannel, AlertRule, Metric, Op, Severity } from './model';

export interface MetricInfo {
  id: Metric;
  label: string;
  /** `condition`: no level (`host.offline`, `process.absent`,
   *  `host.new_listening_port`); `port`: a port and a level of 1 or 0; `level`: a
   *  threshold. */
  kind: 'condition' | 'level' | 'port';
  /** Whether the rule names processes with a filter: `true` it must, `'optional'` it
   *  may (`host.new_listening_port`: only the sockets of matching processes). */
  process: boolean | 'optional';
  /** Whether `aggregate` (each or sum) applies. */
  aggregate: boolean;
  /** Whether `repeat_secs` applies (a new listening port is told once). */
  repeat: boolean;
  unit: string;
  /** What else the rule names: a mount point (`host.disk_percent`) or a sensor
   *  (`host.temperature`). */
  target?: 'mount' | 'sensor';
}

// Keyed by every metric the collector takes (`Metric`, generated from the Rust
// enum): `npm run check` fails when one is added there and not here.
const METRIC_INFO: Record<Metric, Omit<MetricInfo, 'id'>> = {
  'host.offline': { label: 'Host offline', kind: 'condition', process: false, aggregate: false, repeat: true, unit: '' },
  'host.cpu_percent': { label: 'Host CPU', kind: 'level', process: false, aggregate: false, repeat: true, unit: '%' },
  'host.memory_percent': { label: 'Host memory', kind: 'level', process: false, aggregate: false, repeat: true, unit: '%' },
  'host.swap_percent': { label: 'Host swap', kind: 'level', process: false, aggregate: false, repeat: true, unit: '%' },
  'host.load1': { label: 'Load (1 min)', kind: 'level', process: false, aggregate: false, repeat: true, unit: '' },
  'host.net_sent_bytes_per_sec': { label: 'Network sent', kind: 'level', process: false, aggregate: false, repeat: true, unit: 'B/s' },
  'host.net_received_bytes_per_sec': { label: 'Network received', kind: 'level', process: false, aggregate: false, repeat: true, unit: 'B/s' },
  'host.net_errors_per_sec': { label: 'Network errors', kind: 'level', process: false, aggregate: false, repeat: true, unit: '/s' },
  'host.disk_percent': { label: 'Disk space used', kind: 'level', process: false, aggregate: false, repeat: true, unit: '%', target: 'mount' },
  'host.temperature': { label: 'Temperature', kind: 'level', process: false, aggregate: false, repeat: true, unit: '°C', target: 'sensor' },
  'host.new_listening_port': { label: 'New listening port', kind: 'condition', process: 'optional', aggregate: false, repeat: false, unit: '' },
  'process.absent': { label: 'Process absent', kind: 'condition', process: true, aggregate: false, repeat: true, unit: '' },
  'process.count': { label: 'Process count', kind: 'level', process: true, aggregate: false, repeat: true, unit: '' },
  'process.cpu_percent': { label: 'Process CPU', kind: 'level', process: true, aggregate: true, repeat: true, unit: '% of a core' },
  'process.rss_bytes': { label: 'Process memory (RSS)', kind: 'level', process: true, aggregate: true, repeat: true, unit: 'bytes' },
  'port.listening': { label: 'Port listening', kind: 'port', process: false, aggregate: false, repeat: true, unit: '' },
};

export const METRICS: readonly MetricInfo[] = (Object.keys(METRIC_INFO) as Metric[]).map((id) => ({ id, ...METRIC_INFO[id] }));

export const OPS: readonly Op[] = ['>', '>=', '<', '<=', '==', '!='];
export const SEVERITIES: readonly Severity[] = ['info', 'warning', 'critical'];

export function metricInfo(id: Metric): MetricInfo {
  return METRICS.find((m) => m.id === id) ?? METRICS[0];
}

/** A rule as the form holds it: every field as typed. */
export interface RuleForm {
  name: string;
  metric: Metric;
  host: string;
  process: string;
  port: string;
  /** `*` or a mount point. */
  mount: string;
  /** `*` (the hottest) or a sensor's name. */
  sensor: string;
  aggregate: 'each' | 'sum';
  op: Op;
  threshold: string;
  clear: string;
  for_secs: string;
  repeat_secs: string;
  severity: Severity;
  channels: string[];
}

export function emptyForm(): RuleForm {
  return {
    name: '',
    metric: 'host.cpu_percent',
    host: '*',
    process: '',
    port: '',
    mount: '*',
    sensor: '*',
    aggregate: 'each',
    op: '>',
    threshold: '',
    clear: '',
    for_secs: '60',
    repeat_secs: '0',
    severity: 'warning',
    channels: [],
  };
}

export function formFromRule(r: AlertRule): RuleForm {
  return {
    name: r.name,
    metric: r.metric,
    host: r.host,
    process: r.process ?? '',
    port: r.port === null ? '' : String(r.port),
    mount: r.mount ?? '*',
    sensor: r.sensor ?? '*',
    aggregate: r.aggregate,
    op: r.op ?? (r.metric === 'port.listening' ? '==' : '>'),
    threshold: r.threshold === null ? '' : String(r.threshold),
    clear: r.clear === null ? '' : String(r.clear),
    for_secs: String(r.for_secs),
    repeat_secs: String(r.repeat_secs),
    severity: r.severity,
    channels: [...r.channels],
  };
}

/** What is wrong with a form, named by the rule's field as the collector names it. */
export interface FormProblem {
  field: string;
  message: string;
}

const NUMBER = /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/;

function wholeSeconds(text: string, field: string): number | FormProblem {
  const t = text.trim();
  if (t === '') return 0;
  if (!/^\d+$/.test(t)) return { field, message: 'Whole seconds, 0 or more.' };
  const n = Number(t);
  if (n > 7 * 24 * 3600) return { field, message: 'At most a week (604800 s).' };
  return n;
}

/** Whether `m` is a mount as the collector takes one: an absolute path without empty,
 *  `.` or `..` parts and no trailing `/` (or `/` itself), or a drive such as `C:\`. */
export function isMount(m: string): boolean {
  if (/^[A-Za-z]:[\\/]?$/.test(m)) return true;
  if (m === '/') return true;
  if (!m.startsWith('/') || m.endsWith('/') || /[\u0000-\u001f\u007f]/.test(m)) return false;
  return m
    .slice(1)
    .split('/')
    .every((part) => part !== '' && part !== '.' && part !== '..');
}

/** The rule a form describes, or the first problem with it. */
export function ruleFromForm(f: RuleForm): AlertRule | FormProblem {
  const info = metricInfo(f.metric);
  const name = f.name.trim();
  if (name === '' || new TextEncoder().encode(name).length > 100 || name.includes('/'))
    return { field: 'name', message: 'A name of 1 to 100 bytes, without `/`.' };
  const host = f.host.trim() === '' ? '*' : f.host.trim();
  if (/\s/.test(host)) return { field: 'host', message: 'A host name (no spaces), or * for every host.' };
  const process = f.process.trim();
  if (info.process === true && process === '') return { field: 'process', message: 'Name the processes, e.g. name:nginx.' };
  let port: number | null = null;
  if (info.kind === 'port') {
    port = Number(f.port);
    if (!/^\d+$/.test(f.port.trim()) || port < 1 || port > 65535) return { field: 'port', message: 'A port, 1 to 65535.' };
  }
  const mount = f.mount.trim() === '' ? '*' : f.mount.trim();
  if (info.target === 'mount' && mount !== '*' && !isMount(mount))
    return { field: 'mount', message: 'A mount point such as / or /home, or * for every mount.' };
  const sensor = f.sensor.trim() === '' ? '*' : f.sensor.trim();
  let threshold: number | null = null;
  let clear: number | null = null;
  let op: Op | null = null;
  if (info.kind !== 'condition') {
    op = f.op;
    const t = f.threshold.trim();
    if (t === '' && info.kind === 'level') return { field: 'threshold', message: 'A number to compare with.' };
    if (t !== '') {
      if (!NUMBER.test(t)) return { field: 'threshold', message: 'A number, e.g. 90 or 1.5e9.' };
      threshold = Number(t);
    }
    const c = f.clear.trim();
    if (c !== '') {
      if (!NUMBER.test(c)) return { field: 'clear', message: 'A number, or empty to clear at the threshold.' };
      if (op === '==' || op === '!=') return { field: 'clear', message: 'A clear level goes with >, >=, < or <=.' };
      clear = Number(c);
      const level = threshold ?? 0;
      if ((op === '>' || op === '>=') && clear > level)
        return { field: 'clear', message: `With ${op} the clear level is at most the threshold.` };
      if ((op === '<' || op === '<=') && clear < level)
        return { field: 'clear', message: `With ${op} the clear level is at least the threshold.` };
    }
  }
  const forSecs = wholeSeconds(f.for_secs, 'for_secs');
  if (typeof forSecs !== 'number') return forSecs;
  if (f.metric === 'host.offline' && forSecs !== 0 && forSecs < 5)
    return { field: 'for_secs', message: 'At least 5 s without a snapshot.' };
  const repeatSecs = wholeSeconds(f.repeat_secs, 'repeat_secs');
  if (typeof repeatSecs !== 'number') return repeatSecs;
  if (repeatSecs !== 0 && !info.repeat) return { field: 'repeat_secs', message: `${info.label} is told once: 0.` };
  if (repeatSecs !== 0 && repeatSecs < 10) return { field: 'repeat_secs', message: 'At least 10 s, or 0 for never.' };
  return {
    name,
    metric: f.metric,
    host,
    process: info.process === true || (info.process === 'optional' && process !== '') ? process : null,
    port,
    ...(info.target === 'mount' ? { mount } : {}),
    ...(info.target === 'sensor' ? { sensor } : {}),
    aggregate: info.aggregate ? f.aggregate : 'each',
    op,
    threshold,
    for_secs: forSecs,
    clear,
    severity: f.severity,
    repeat_secs: repeatSecs,
    channels: [...f.channels],
    read_only: false,
  };
}

export function isProblem(x: AlertRule | FormProblem): x is FormProblem {
  return 'message' in x;
}

/** The rule "alert me when this goes away" makes: no process of this name on this host
 *  for `forSecs`. The name is matched exactly (`name="…"`); `null` for a name the
 *  filter language cannot quote (one with a double quote in it). */
export function absentRuleFor(processName: string, hostname: string, forSecs = 10): AlertRule | null {
  if (processName.includes('"') || processName.trim() === '') return null;
  const name = `${processName} gone on ${hostname}`.slice(0, 100).replaceAll('/', '-');
  return {
    name,
    metric: 'process.absent',
    host: hostname,
    process: `name="${processName}"`,
    port: null,
    aggregate: 'each',
    op: null,
    threshold: null,
    for_secs: forSecs,
    clear: null,
    severity: 'warning',
    repeat_secs: 0,
    channels: [],
    read_only: false,
  };
}

/** How a rule reads in a table: `process.cpu_percent of name:nginx > 90 for 30 s`. */
export function describeRule(r: AlertRule): string {
  const info = metricInfo(r.metric);
  const subject = r.process ? ` of ${r.process}${r.aggregate === 'sum' ? ' (sum)' : ''}` : '';
  const port = r.port !== null ? ` ${r.port}` : '';
  const target =
    info.target === 'mount'
      ? ` of ${!r.mount || r.mount === '*' ? 'every mount' : r.mount}`
      : info.target === 'sensor'
        ? ` of ${!r.sensor || r.sensor === '*' ? 'the hottest sensor' : r.sensor}`
        : '';
  const level = info.kind === 'condition' ? '' : ` ${r.op ?? (info.kind === 'port' ? '==' : '>')} ${r.threshold ?? 0}`;
  const clear = r.clear !== null ? `, clears past ${r.clear}` : '';
  const hold = r.for_secs > 0 ? ` for ${r.for_secs} s` : '';
  return `${info.label}${port}${target}${subject}${level}${hold}${clear}`;
}

/** Where a channel sends, as far as answers show it (secrets are never in them). */
export function channelTarget(c: AlertChannel): string {
  if (c.email) {
    const port = c.email.port ?? { none: 25, starttls: 587, tls: 465 }[c.email.tls];
    return `${c.email.host}:${port} (${c.email.tls}) → ${c.email.to.join(', ')}${c.email.password_set ? ' (password set)' : ''}`;
  }
  if (c.kind === 'desktop') return 'this desktop';
  return `${c.url}${c.token_set ? ' (token set)' : ''}`;
}
