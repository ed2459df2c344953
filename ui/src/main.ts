// Entry point: styles, the state object over the right transport, and the root
// component. Nothing here runs inline in the page (the collector's CSP forbids it).

import './app.css';
import { mount } from 'svelte';
import Root from './App.svelte';
import { App } from './lib/app.svelte';
import { createTransport } from './lib/transport';

const app = new App(createTransport());
const target = document.getElementById('app');
if (target) {
  mount(Root, { target, props: { app } });
  void app.start();
}
