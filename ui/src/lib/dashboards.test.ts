// Host patterns, series on one time axis, a new widget's place, and import and export.

import { describe, expect, it } from 'vitest';
import { alignSeries, exportText, formFromWidget, hostMatcher, newWidget, parseImport, sumByTime, widgetFromForm } from './dashboards';

describe('dashboards', () => {
  it('matches host names by pattern, ignoring case', () => {
    const web = hostMatcher('web-*');
    expect(['web-1', 'WEB-10', 'web-', 'db-1', 'aweb-1'].map(web)).toEqual([true, true, true, false, false]);
    expect(hostMatcher('db-?')('db-1')).toBe(true);
    expect(hostMatcher('db-?')('db-12')).toBe(false);
    expect(hostMatcher('a.b')('axb')).toBe(false);
    expect(hostMatcher('a.b')('a.b')).toBe(true);
  });

  it('puts several series on one time axis, drawn across the others\' times', () => {
    const aligned = alignSeries([
      { label: 'a', points: [[20, 2], [10, 1], [40, null]] },
      { label: 'b', points: [[30, 3], [15, 4]] },
    ]);
    expect(aligned.x).toEqual([10, 15, 20, 30, 40]);
    // A time only the other series has is `undefined` (joined over); a series' own
    // null is a gap.
    expect(aligned.series).toEqual([
      { label: 'a', values: [1, undefined, 2, undefined, null] },
      { label: 'b', values: [undefined, 4, undefined, 3, undefined] },
    ]);
  });

  it('adds up a group of processes per time', () => {
    expect(sumByTime([[[1, 2], [2, null]], [[1, 3], [2, null], [3, 1]]])).toEqual([[1, 5], [2, null], [3, 1]]);
  });

  it('places a new widget under the others', () => {
    const first = newWidget('host_chart', [], 'web-1');
    expect(first).toMatchObject({ kind: 'host_chart', x: 0, y: 0, hosts: 'web-1' });
    const second = newWidget('alerts', [first, { ...first, y: 4, h: 5 }], 'web-1');
    expect(second.y).toBe(9);
  });

  it('exports what the collector takes back, and imports it private', () => {
    const exported = exportText({ id: 3, owner: 'bob', read_only: true, name: 'Web', shared: 'everyone', shared_with: [], widgets: [] });
    expect(JSON.parse(exported)).toEqual({ name: 'Web', shared: 'everyone', shared_with: [], widgets: [] });
    expect(parseImport(exported)).toEqual({ name: 'Web', shared: 'private', shared_with: [], widgets: [] });
    expect(() => parseImport('{')).toThrow('not JSON');
    expect(() => parseImport('[]')).toThrow('not a dashboard');
    expect(() => parseImport('{"name": "x"}')).toThrow('widgets');
  });
});

describe('widget settings form', () => {
  it('round-trips a widget, leaving blank optional settings out', () => {
    const table = newWidget('process_table', [], 'web-1');
    const values = formFromWidget(table);
    expect(values).toEqual({ title: '', host: 'web-1', filter: 'cpu>1', limit: '20' });
    expect(widgetFromForm(table, values)).toEqual(table);
    const alerts = newWidget('alerts', [], 'web-1');
    expect(widgetFromForm(alerts, { title: ' ', hosts: 'db-*' })).toEqual({ ...alerts, hosts: 'db-*' });
    expect(widgetFromForm(table, { ...values, limit: '5', title: 'Busy' })).toMatchObject({ limit: 5, title: 'Busy' });
  });

  it('reads a network map widget\'s choice of drawing as a boolean', () => {
    const map = newWidget('network_map', [], 'web-1');
    expect(map).toEqual({ kind: 'network_map', x: 0, y: 0, w: 12, h: 8, collapsed: false });
    expect(formFromWidget(map)).toEqual({ title: '', hosts: '', collapsed: 'false' });
    expect(widgetFromForm(map, { title: '', hosts: 'web-*, db-1', collapsed: 'true' })).toEqual({ ...map, hosts: 'web-*, db-1', collapsed: true });
    expect(widgetFromForm(map, formFromWidget(map))).toEqual(map);
  });
});
