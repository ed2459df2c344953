// Test fixtures: processes and connections with sensible defaults, so each test states
// only what it is about.

import type { ConnectionSample, DesktopState, InterfaceCounters, ProcessSample, Snapshot } from '../model';

export function proc(pid: number, ppid: number | null, patch: Partial<ProcessSample> = {}): ProcessSample {
  return {
    pid,
    ppid,
    name: `p${pid}`,
    cmd: `/usr/bin/p${pid} --flag`,
    user: 'alice',
    status: 'sleeping',
    cpu_percent: 0,
    memory_percent: 0,
    rss_bytes: 0,
    virtual_bytes: 0,
    threads: 1,
    start_time: '2026-01-01T00:00:00.000Z',
    disk_read_bytes: null,
    disk_write_bytes: null,
    disk_read_bytes_per_sec: null,
    disk_write_bytes_per_sec: null,
    kernel_thread: false,
    ...patch,
  };
}

export function conn(patch: Partial<ConnectionSample> = {}): ConnectionSample {
  return {
    protocol: 'tcp',
    local_address: '127.0.0.1',
    local_port: 8080,
    remote_address: null,
    remote_port: null,
    state: 'LISTEN',
    pid: 100,
    ...patch,
  };
}

export function counters(patch: Partial<InterfaceCounters> = {}): InterfaceCounters {
  return {
    sent_bytes: 0,
    received_bytes: 0,
    sent_packets: 0,
    received_packets: 0,
    errors_in: 0,
    errors_out: 0,
    drops_in: null,
    drops_out: null,
    sent_bytes_per_sec: 0,
    received_bytes_per_sec: 0,
    sent_packets_per_sec: 0,
    received_packets_per_sec: 0,
    ...patch,
  };
}

/** A snapshot of `hostname` with two cores, 8 GiB of memory and the given processes. */
export function snapshot(patch: { hostname?: string; processes?: ProcessSample[]; taken_at?: string } = {}): Snapshot {
  const hostname = patch.hostname ?? 'web-1';
  return {
    schema_version: 1,
    host: {
      id: hostname,
      hostname,
      os: 'Debian GNU/Linux 12',
      kernel: '6.1.0',
      arch: 'x86_64',
      cpu_model: null,
      logical_cores: 2,
      memory_total_bytes: 8 * 2 ** 30,
      boot_time: '2026-01-01T00:00:00.000Z',
      agent_version: '0.1.0',
    },
    taken_at: patch.taken_at ?? '2026-01-01T00:00:10.000Z',
    seq: 1,
    interval_ms: 1000,
    cpu: { total_percent: 25, per_core_percent: [10, 40], load_average: null },
    memory: {
      total_bytes: 8 * 2 ** 30,
      used_bytes: 2 * 2 ** 30,
      available_bytes: 6 * 2 ** 30,
      swap_total_bytes: 0,
      swap_used_bytes: 0,
    },
    processes: patch.processes ?? [proc(1, null)],
    connections: [],
    network: { total: counters(), interfaces: [] },
    ports: { by_local_port: [], listening: [] },
    errors: [],
  };
}

/** The desktop app's state: local mode on `ada-laptop`, built-in collector off. */
export const LOCAL_STATE: DesktopState = {
  version: '0.1.0',
  mode: 'local',
  hostname: 'ada-laptop',
  username: 'ada',
  remote: null,
  collector: { running: false, address: null, error: null },
  settings: { close_to_tray: true, collector: { enabled: false, bind: '127.0.0.1', port: 7450 }, remote_url: null },
  paused: false,
  tray: true,
};
