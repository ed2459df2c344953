// Hands the one `App` state object to every component through Svelte's context, so
// components never import a global and a test could mount them with its own.

import { getContext, setContext } from 'svelte';
import type { App } from './app.svelte';

const KEY = Symbol('procyon-app');

export function provideApp(app: App): void {
  setContext(KEY, app);
}

export function useApp(): App {
  const app = getContext<App | undefined>(KEY);
  if (!app) throw new Error('useApp() outside the dashboard');
  return app;
}
