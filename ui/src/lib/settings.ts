// The desktop Settings view's rules, as plain functions: what a valid collector address,
// port and remote URL are (checked before anything is sent to the app), what an address
// exposes, and the exact commands that connect an agent to the built-in collector.

import type { CollectorSettings } from './model';

/** A message per field that is wrong; empty when everything is right. */
export type FieldErrors<K extends string> = Partial<Record<K, string>>;

/** What the collector form holds: text, as typed. */
export interface CollectorForm {
  enabled: boolean;
  bind: string;
  port: string;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** An IPv4 or IPv6 address written as numbers (not a host name: the collector binds to
 *  an address of this machine). */
export function isIpAddress(text: string): boolean {
  if (IPV4.test(text)) return true;
  if (!text.includes(':') || /[^0-9a-fA-F:.]/.test(text)) return false;
  try {
    // The URL parser knows every valid IPv6 spelling.
    new URL(`http://[${text}]/`);
    return true;
  } catch {
    return false;
  }
}

/** A TCP port from the text typed, or `null`. */
export function parsePort(text: string): number | null {
  const t = text.trim();
  if (!/^\d{1,5}$/.test(t)) return null;
  const n = Number(t);
  return n >= 1 && n <= 65535 ? n : null;
}

/** The collector settings from the form, or what is wrong with it. */
export function checkCollector(form: CollectorForm): { settings: CollectorSettings | null; errors: FieldErrors<'bind' | 'port'> } {
  const errors: FieldErrors<'bind' | 'port'> = {};
  const bind = form.bind.trim();
  const port = parsePort(form.port);
  if (!isIpAddress(bind))
    errors.bind = 'Enter an IP address of this computer: 127.0.0.1 for this computer only, 0.0.0.0 for every network.';
  if (port === null) errors.port = 'Enter a port from 1 to 65535.';
  if (port === null || errors.bind) return { settings: null, errors };
  return { settings: { enabled: form.enabled, bind, port }, errors };
}

/** Who can reach a collector listening on `bind`. */
export type Exposure = 'machine' | 'network' | 'everywhere';

export function exposure(bind: string): Exposure {
  const b = bind.trim();
  if (/^127\./.test(b) || b === '::1') return 'machine';
  if (b === '0.0.0.0' || b === '::' || /^(0*:)*:?0*$/.test(b)) return 'everywhere';
  return 'network';
}

/** A plain-words warning for an address that other machines can reach, or `null`. */
export function exposureWarning(bind: string): string | null {
  switch (exposure(bind)) {
    case 'machine':
      return null;
    case 'everywhere':
      return `${bind.trim()} opens the collector to every network this computer is on: any device that can reach it can try to sign in, and a stolen agent key lets it send data. Use it on networks you trust, with a firewall, or put the collector behind TLS.`;
    case 'network':
      return `Devices on the network of ${bind.trim()} can reach the collector. Make sure that network is one you trust.`;
  }
}

/** What the remote sign-in form holds. */
export interface RemoteForm {
  url: string;
  username: string;
  password: string;
}

/** The remote collector's base URL (no trailing slash), or what is wrong with the form. */
export function checkRemote(form: RemoteForm): { url: string | null; errors: FieldErrors<'url' | 'username' | 'password'> } {
  const errors: FieldErrors<'url' | 'username' | 'password'> = {};
  const text = form.url.trim();
  let url: string | null = null;
  let parsed: URL | null = null;
  try {
    parsed = new URL(text);
  } catch {
    parsed = null;
  }
  if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || !parsed.hostname) {
    errors.url = 'Enter the collector’s address with http:// or https://, e.g. https://procyon.example.com.';
  } else if (parsed.username || parsed.password) {
    errors.url = 'Leave the user name and password out of the address; use the fields below.';
  } else if (parsed.search || parsed.hash) {
    errors.url = 'Enter the collector’s address only, without ? or #.';
  } else {
    url = `${parsed.origin}${parsed.pathname.replace(/\/+$/, '')}`;
  }
  if (!form.username.trim()) errors.username = 'Enter your user name on that collector.';
  if (!form.password) errors.password = 'Enter your password.';
  return { url: Object.keys(errors).length === 0 ? url : null, errors };
}

/** A warning for a plain-http address other than this computer, or `null`. */
export function remoteWarning(url: string): string | null {
  try {
    const u = new URL(url.trim());
    if (u.protocol !== 'http:') return null;
    const host = u.hostname.replace(/^\[|\]$/g, '');
    if (host === 'localhost' || /^127\./.test(host) || host === '::1') return null;
    return 'With http:// the password and everything shown cross the network unencrypted. Prefer https://.';
  } catch {
    return null;
  }
}

/** The URL an agent uses to reach the built-in collector: the address it listens on,
 *  or this computer's host name when it listens on every address. */
export function collectorUrl(bind: string, port: number, hostname: string): string {
  const b = bind.trim();
  const host = exposure(b) === 'everywhere' ? hostname : b.includes(':') ? `[${b}]` : b;
  return `http://${host}:${port}`;
}

/** `text` as one shell word. */
export function shellQuote(text: string): string {
  if (/^[A-Za-z0-9_.:/@%+=,-]+$/.test(text)) return text;
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** The commands to run on a server so that its agent reports here with `key`: store
 *  the key, then start the agent (under the host name the key is bound to, if any). */
export function agentCommands(key: string, url: string, boundHost: string | null): string[] {
  const hostFlag = boundHost ? ` --hostname ${shellQuote(boundHost)}` : '';
  return [
    `echo ${shellQuote(key)} | sudo procyon-agent set-key`,
    `sudo procyon-agent --collector ${shellQuote(url)}${hostFlag}`,
  ];
}

/** What is wrong with a key's name and optional host binding (the collector's rule for
 *  names, the agent's for host names). */
export function checkKeyForm(name: string, host: string): { errors: FieldErrors<'name' | 'host'> } {
  const errors: FieldErrors<'name' | 'host'> = {};
  const n = name.trim();
  if (n.length === 0 || n.length > 100) errors.name = 'Give the key a name of 1 to 100 characters, e.g. the server’s name.';
  const h = host.trim();
  // The agent's own rule for `--hostname`: at most 255 characters, no spaces or
  // control characters.
  if (h.length > 255 || /[\s\u0000-\u001f\u007f]/.test(h))
    errors.host = 'A host name has at most 255 characters and no spaces; leave it empty to let any host use the key.';
  return { errors };
}
