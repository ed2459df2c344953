import { describe, expect, it } from 'vitest';
import { containerLabel, groupByContainer } from './containers';
import type { ContainerRef, ProcessSample } from './model';

const ID = '3f4e8a1c9b2d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f';

function proc(pid: number, container?: ContainerRef, cpu = 1): ProcessSample {
  return {
    pid,
    ppid: 1,
    name: `p${pid}`,
    cmd: '',
    user: 'root',
    status: 'sleeping',
    cpu_percent: cpu,
    memory_percent: 0.5,
    rss_bytes: 0,
    virtual_bytes: 0,
    threads: 1,
    start_time: null,
    disk_read_bytes: null,
    disk_write_bytes: null,
    disk_read_bytes_per_sec: null,
    disk_write_bytes_per_sec: null,
    kernel_thread: false,
    container,
  };
}

describe('containers', () => {
  it('names a container by its name, else its short id', () => {
    expect(containerLabel({ runtime: 'docker', id: ID, pod: null, name: 'web' })).toBe('web');
    expect(containerLabel({ runtime: 'docker', id: ID, pod: null })).toBe('3f4e8a1c9b2d');
    expect(containerLabel({ runtime: 'lxc', id: 'db', pod: null, name: 'db' })).toBe('db');
  });

  it('groups processes by container, the uncontained last, with totals', () => {
    const web = { runtime: 'docker', id: ID, pod: null, name: 'web-10' } as const;
    const web2 = { runtime: 'podman', id: 'a'.repeat(64), pod: null, name: 'web-2' } as const;
    const groups = groupByContainer([proc(1), proc(10, web, 2), proc(20, web2), proc(11, web, 3), proc(2)]);
    expect(groups.map((g) => [g.label, g.runtime, g.procs.map((p) => p.pid)])).toEqual([
      ['web-2', 'podman', [20]],
      ['web-10', 'docker', [10, 11]],
      ['No container', null, [1, 2]],
    ]);
    expect(groups[1].cpuPercent).toBe(5);
    expect(groups[1].memoryPercent).toBe(1);
  });
});
