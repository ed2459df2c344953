// Test fixtures: processes and connections with sensible defaults, so each test states
// only what it is about.

import type { ConnectionSample, ProcessSample } from '../model';

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
