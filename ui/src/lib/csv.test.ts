// CSV export: quoting, and spreadsheet formulas in hostile text defused.

import { describe, expect, it } from 'vitest';
import { csvField, toCsv } from './csv';

describe('csv', () => {
  it('quotes fields that need it', () => {
    expect(csvField('plain')).toBe('plain');
    expect(csvField('a,b')).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
    expect(csvField('two\nlines')).toBe('"two\nlines"');
    expect(csvField(null)).toBe('');
    expect(csvField(12.5)).toBe('12.5');
  });
  it('defuses spreadsheet formulas in text', () => {
    expect(csvField("=cmd|' /C calc'!A0")).toBe("'=cmd|' /C calc'!A0");
    expect(csvField('-rf')).toBe("'-rf");
    expect(csvField('@SUM(1)')).toBe("'@SUM(1)");
    expect(csvField(-3)).toBe('-3');
    expect(csvField('\t=1+1')).toBe("'\t=1+1");
    expect(csvField(' =1+1')).toBe("' =1+1");
    expect(csvField('  @SUM(1)')).toBe("'  @SUM(1)");
    expect(csvField(' a=b')).toBe(' a=b');
    expect(csvField(';=1+1')).toBe('";=1+1"');
    expect(csvField('a;=1+1')).toBe('"a;=1+1"');
  });
  it('writes a document', () => {
    expect(toCsv(['pid', 'name'], [[1, 'init'], [2, 'a,b']])).toBe('pid,name\n1,init\n2,"a,b"\n');
  });
});
