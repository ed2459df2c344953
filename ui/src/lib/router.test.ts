// The URL hash: view, host and snapshot round-trip; nothing else goes in it.

import { describe, expect, it } from 'vitest';
import { formatHash, isBare, parseHash } from './router';

describe('router', () => {
  it('round-trips a route', () => {
    const route = { view: 'history' as const, host: 'web 1&x', snapshot: 42 };
    expect(parseHash(formatHash(route))).toEqual(route);
  });
  it('falls back to the processes view', () => {
    expect(parseHash('')).toEqual({ view: 'processes', host: null, snapshot: null });
    expect(parseHash('#/nonsense?snapshot=abc')).toEqual({ view: 'processes', host: null, snapshot: null });
  });
  it('keeps the open dashboard in the dashboards view only', () => {
    const route = { view: 'dashboards' as const, host: null, snapshot: null, dashboard: 7 };
    expect(formatHash(route)).toBe('#/dashboards?dashboard=7');
    expect(parseHash(formatHash(route))).toEqual(route);
    expect(parseHash('#/processes?dashboard=7')).toEqual({ view: 'processes', host: null, snapshot: null });
    expect(parseHash('#/dashboards?dashboard=x')).toEqual({ view: 'dashboards', host: null, snapshot: null });
  });

  it('knows the fleet view and a bare front door', () => {
    expect(parseHash('#/fleet').view).toBe('fleet');
    expect(isBare('')).toBe(true);
    expect(isBare('#/')).toBe(true);
    expect(isBare('#/?host=a')).toBe(true);
    expect(isBare('#/processes')).toBe(false);
  });
  it('never holds more than view, host and snapshot', () => {
    expect(formatHash({ view: 'audit', host: null, snapshot: null })).toBe('#/audit');
    expect(parseHash('#/map').view).toBe('map');
    expect(formatHash({ view: 'alerts', host: 'web-1', snapshot: null })).toBe('#/alerts?host=web-1');
    expect(parseHash('#/alerts').view).toBe('alerts');
    expect(formatHash({ view: 'processes', host: 'a', snapshot: null })).toBe('#/processes?host=a');
  });
});
