// Where the dashboard is, kept in the URL's hash (`#/processes?host=web-1`), so that a
// page can be reloaded, bookmarked or shared and the back button works. It never holds
// a token or anything secret: only the view, the host, a snapshot id and a dashboard id.

/** The views. `settings` exists in the desktop app only; `fleet` is every host at once;
 *  `fleet`, `map` (the fleet's network map), `dashboards`, `alerts` and `audit` need no host. */
export type View = 'fleet' | 'processes' | 'network' | 'map' | 'history' | 'dashboards' | 'alerts' | 'audit' | 'settings';

export const VIEWS: readonly View[] = [
  'fleet',
  'processes',
  'network',
  'map',
  'history',
  'dashboards',
  'alerts',
  'audit',
  'settings',
];

/** Whether a hash names no view at all (the dashboard's front door), where the app picks
 *  the landing view: the fleet when there is more than one host. */
export function isBare(hash: string): boolean {
  return hash.replace(/^#\/?/, '').split('?', 1)[0] === '';
}

export interface Route {
  view: View;
  host: string | null;
  /** A stored snapshot shown instead of the live one. */
  snapshot: number | null;
  /** The dashboard open in the dashboards view; absent for the first one. */
  dashboard?: number;
}

export function parseHash(hash: string): Route {
  const body = hash.replace(/^#\/?/, '');
  const [path, query = ''] = body.split('?', 2);
  const view = (VIEWS as readonly string[]).includes(path) ? (path as View) : 'processes';
  const params = new URLSearchParams(query);
  const host = params.get('host');
  const snap = params.get('snapshot');
  const snapshot = snap !== null && /^\d+$/.test(snap) ? Number(snap) : null;
  const route: Route = { view, host: host && host.length > 0 ? host : null, snapshot };
  const board = params.get('dashboard');
  if (view === 'dashboards' && board !== null && /^\d+$/.test(board)) route.dashboard = Number(board);
  return route;
}

export function formatHash(route: Route): string {
  const params = new URLSearchParams();
  if (route.host) params.set('host', route.host);
  if (route.snapshot !== null) params.set('snapshot', String(route.snapshot));
  if (route.view === 'dashboards' && route.dashboard !== undefined) params.set('dashboard', String(route.dashboard));
  const query = params.toString();
  return `#/${route.view}${query ? `?${query}` : ''}`;
}
