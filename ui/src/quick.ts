// Entry point of the quick view (`quick.html`, the desktop app's small window): styles,
// the theme the dashboard chose, and the quick view over the desktop transport. It loads
// none of the dashboard's views or charts.

import './app.css';
import { mount } from 'svelte';
import QuickView from './components/QuickView.svelte';
import { TauriTransport, inTauri } from './lib/tauri';

try {
  // The dashboard's theme choice, when there is one (it sets the same attribute).
  const theme = localStorage.getItem('procyon.theme');
  if (theme === 'light' || theme === 'dark') document.documentElement.dataset.theme = theme;
} catch {
  // No storage: follow the system.
}

const target = document.getElementById('quick');
if (target) mount(QuickView, { target, props: { transport: inTauri() ? new TauriTransport() : null } });
