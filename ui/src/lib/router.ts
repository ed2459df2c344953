// Where the dashboard is, kept in the URL's hash (`#/processes?host=web-1`), so that a
// page can be reloaded, bookmarked or shared and the back button works. It never holds
// a token or anything secret: only the view, the host and a snapshot id.

/** The views. `settings` exists in the desktop app only. */
export type View = 'processes' | 'network' | 'history' | 'alerts' | 'audit' | 'settings';

export const VIEWS: readonly View[] = ['processes', 'network', 'history', 'alerts', 'audit', 'settings'];

export interface Route {
  view: View;
  host: string | null;
  /** A stored snapshot shown instead of the live one. */
  snapshot: number | null;
}

export function parseHash(hash: string): Route {
  const body = hash.replace(/^#\/?/, '');
  const [path, query = ''] = body.split('?', 2);
  const view = (VIEWS as readonly string[]).includes(path) ? (path as View) : 'processes';
  const params = new URLSearchParams(query);
  const host = params.get('host');
  const snap = params.get('snapshot');
  const snapshot = snap !== null && /^\d+$/.test(snap) ? Number(snap) : null;
  return { view, host: host && host.length > 0 ? host : null, snapshot };
}

export function formatHash(route: Route): string {
  const params = new URLSearchParams();
  if (route.host) params.set('host', route.host);
  if (route.snapshot !== null) params.set('snapshot', String(route.snapshot));
  const query = params.toString();
  return `#/${route.view}${query ? `?${query}` : ''}`;
}
