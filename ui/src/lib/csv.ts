// CSV of what a table shows ("export the current view"). Fields are quoted when they
// need it (a `;` too: some locales separate cells with it), and a leading `=`, `+`, `-`
// or `@` (after any spaces, which spreadsheets skip), tab or carriage return is escaped
// exactly as the collector's own exports do, so that a spreadsheet never runs a hostile
// process name as a formula.

/** One CSV field. */
export function csvField(value: string | number | boolean | null | undefined): string {
  if (value == null) return '';
  let v = String(value);
  if (typeof value === 'string' && /^(?:[\t\r]| *[=+\-@])/.test(v)) v = `'${v}`;
  return /[",;\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

/** A CSV document: a header line, then one line per row. */
export function toCsv(headers: readonly string[], rows: Iterable<readonly (string | number | boolean | null | undefined)[]>): string {
  const lines = [headers.map(csvField).join(',')];
  for (const row of rows) lines.push(row.map(csvField).join(','));
  return `${lines.join('\n')}\n`;
}
