// Process details as the drawer words them.

import { describe, expect, it } from 'vitest';
import { cgroupText, containerText, countByKind, filesSummary, detailsError, fileText, formatLimit, keyLimits, moreText, unavailableText } from './details';
import type { OpenFile, ProcessDetails } from './model';
import { ApiError } from './transport';

const file = (fd: number, kind: OpenFile['kind'], target: string, socket: string | null = null): OpenFile => ({
  fd,
  kind,
  target,
  socket,
});

describe('details', () => {
  it('words limits with their units and unlimited', () => {
    expect(formatLimit({ name: 'Max open files', soft: 1024, hard: 524288, unit: 'files' })).toBe('1,024 / 524,288 files');
    expect(formatLimit({ name: 'Max cpu time', soft: null, hard: null, unit: 'seconds' })).toBe('unlimited');
    expect(formatLimit({ name: 'Max stack size', soft: 8388608, hard: null, unit: 'bytes' })).toBe('8,388,608 / unlimited bytes');
    expect(formatLimit({ name: 'Max nice priority', soft: 0, hard: 0, unit: null })).toBe('0');
  });

  it('puts the limits people look for first, in order', () => {
    const l = (name: string) => ({ name, soft: 1, hard: 1, unit: null });
    expect(keyLimits([l('Max cpu time'), l('Max processes'), l('Max open files')]).map((x) => x.name)).toEqual([
      'Max open files',
      'Max processes',
    ]);
  });

  it('counts descriptors by kind and describes sockets by their addresses', () => {
    const files = [file(0, 'pipe', 'pipe:[1]'), file(3, 'file', '/tmp/x'), file(4, 'socket', 'socket:[9]', 'tcp 127.0.0.1:80 LISTEN'), file(5, 'file', '/a')];
    expect(countByKind(files)).toEqual([
      ['file', 2],
      ['socket', 1],
      ['pipe', 1],
    ]);
    expect(fileText(files[2])).toBe('tcp 127.0.0.1:80 LISTEN');
    expect(fileText(files[1])).toBe('/tmp/x');
    expect(filesSummary(files, 7)).toBe('7 · 2 file · 1 socket · 1 pipe');
    expect(filesSummary([], null)).toBe('—');
  });

  it('shows each control group once', () => {
    expect(cgroupText(['/', '/', '/user.slice', '/'])).toBe('/ · /user.slice');
    expect(cgroupText([])).toBe('/');
  });

  it('says how much a capped list left out', () => {
    expect(moreText(500, 1700)).toBe('and 1,200 more not listed');
    expect(moreText(3, 3)).toBeNull();
    expect(moreText(0, null)).toBeNull();
  });

  it('shortens container ids like docker ps', () => {
    const id = '3f4e8a1c9b2d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f';
    expect(containerText({ runtime: 'docker', id, pod: null })).toBe('docker 3f4e8a1c9b2d');
    expect(containerText({ runtime: 'systemd_nspawn', id: 'web1', pod: null })).toBe('systemd-nspawn web1');
    expect(containerText({ runtime: 'containerd', id, pod: 'ab-cd' })).toBe('containerd 3f4e8a1c9b2d · pod ab-cd');
    expect(containerText({ runtime: 'docker', id, pod: null, name: 'web' })).toBe('docker web · 3f4e8a1c9b2d');
    expect(containerText({ runtime: 'lxc', id: 'db', pod: null, name: 'db' })).toBe('lxc db');
  });

  it('explains each failure by its status', () => {
    expect(detailsError(new ApiError(404, 'not_found', 'Process 7 is gone.'))).toBe('This process is gone: Process 7 is gone.');
    expect(detailsError(new ApiError(409, 'pid_reused', 'reused'))).toMatch(/another process/);
    expect(detailsError(new ApiError(501, 'unsupported', 'old agent'))).toMatch(/^Not available/);
    expect(detailsError(new ApiError(503, 'unavailable', 'offline'))).toMatch(/cannot be reached/);
    expect(detailsError(new Error('boom'))).toBe('boom');
  });

  it('names the parts that could not be read', () => {
    const details = { unavailable: [] } as unknown as ProcessDetails;
    expect(unavailableText(details)).toBeNull();
    const denied = {
      unavailable: [
        { part: 'files', reason: 'permission denied' },
        { part: 'memory_maps', reason: 'permission denied' },
      ],
    } as unknown as ProcessDetails;
    expect(unavailableText(denied)).toBe('Not shown: files, memory maps (permission denied).');
  });
});
