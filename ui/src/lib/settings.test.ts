// The desktop Settings rules: addresses, ports and URLs checked before anything is sent,
// the exposure warning, and the agent's command lines.

import { describe, expect, it } from 'vitest';
import {
  agentCommands,
  checkCollector,
  checkKeyForm,
  checkRemote,
  collectorUrl,
  exposure,
  exposureWarning,
  isIpAddress,
  parsePort,
  remoteWarning,
  shellQuote,
} from './settings';

describe('collector form', () => {
  it('accepts ports 1 to 65535 only, as whole numbers', () => {
    expect(['1', '7450', ' 65535 '].map(parsePort)).toEqual([1, 7450, 65535]);
    expect(['0', '65536', '-1', '80.5', '1e3', '', 'http', '070000'].map(parsePort)).toEqual(Array(8).fill(null));
  });

  it('accepts IP addresses and refuses anything else', () => {
    for (const ok of ['127.0.0.1', '0.0.0.0', '192.168.1.20', '::', '::1', 'fe80::1', '2001:db8::7']) expect(isIpAddress(ok), ok).toBe(true);
    for (const bad of ['', 'localhost', '256.1.1.1', '1.2.3', '01.2.3.4', '1.2.3.4:80', 'fe80::1%eth0', '::g', '[::1]', ' 1.2.3.4'])
      expect(isIpAddress(bad), bad).toBe(false);
  });

  it('gives settings only when every field is right', () => {
    expect(checkCollector({ enabled: true, bind: ' 0.0.0.0 ', port: '7451' })).toEqual({
      settings: { enabled: true, bind: '0.0.0.0', port: 7451 },
      errors: {},
    });
    const bad = checkCollector({ enabled: false, bind: 'my-laptop', port: '70000' });
    expect(bad.settings).toBeNull();
    expect(Object.keys(bad.errors).sort()).toEqual(['bind', 'port']);
    expect(checkCollector({ enabled: true, bind: '127.0.0.1', port: '0' }).errors).toEqual({ port: 'Enter a port from 1 to 65535.' });
  });

  it('warns in plain words when the address reaches beyond this computer', () => {
    expect(['127.0.0.1', '127.1.2.3', '::1'].map(exposure)).toEqual(['machine', 'machine', 'machine']);
    expect(['0.0.0.0', '::', '0:0:0:0:0:0:0:0'].map(exposure)).toEqual(['everywhere', 'everywhere', 'everywhere']);
    expect(exposure('192.168.1.20')).toBe('network');
    expect(exposureWarning('127.0.0.1')).toBeNull();
    expect(exposureWarning('0.0.0.0')).toMatch(/^0\.0\.0\.0 opens the collector to every network/);
    expect(exposureWarning('10.0.0.5')).toMatch(/network of 10\.0\.0\.5/);
  });
});

describe('remote form', () => {
  const form = (url: string, username = 'grace', password = 'pw') => checkRemote({ url, username, password });

  it('takes http and https addresses, without a trailing slash', () => {
    expect(form('https://procyon.example.com/').url).toBe('https://procyon.example.com');
    expect(form(' http://10.0.0.5:7450 ').url).toBe('http://10.0.0.5:7450');
    expect(form('https://example.com/procyon/').url).toBe('https://example.com/procyon');
  });

  it('refuses other schemes, credentials and queries in the address', () => {
    for (const bad of ['procyon.example.com', 'ftp://example.com', 'javascript:alert(1)', 'file:///etc/passwd', 'https://u:p@example.com', 'https://example.com/?a=1', 'http://'])
      expect(form(bad).errors.url, bad).toBeDefined();
  });

  it('needs a user name and a password', () => {
    const r = checkRemote({ url: 'https://example.com', username: '  ', password: '' });
    expect(r.url).toBeNull();
    expect(Object.keys(r.errors).sort()).toEqual(['password', 'username']);
  });

  it('warns about plain http beyond this computer', () => {
    expect(remoteWarning('http://procyon.example.com')).toMatch(/unencrypted/);
    expect(remoteWarning('https://procyon.example.com')).toBeNull();
    expect(remoteWarning('http://127.0.0.1:7450')).toBeNull();
    expect(remoteWarning('http://[::1]:7450')).toBeNull();
  });
});

describe('agent keys', () => {
  it('checks the name and the optional host', () => {
    expect(checkKeyForm('web-1', '').errors).toEqual({});
    expect(checkKeyForm('web-1', 'web-1.example.com').errors).toEqual({});
    expect(checkKeyForm(' ', '').errors.name).toBeDefined();
    expect(checkKeyForm('x'.repeat(101), '').errors.name).toBeDefined();
    expect(checkKeyForm('web-1', 'web 1').errors.host).toBeDefined();
  });

  it('points agents at the address the collector listens on', () => {
    expect(collectorUrl('0.0.0.0', 7450, 'ada-laptop')).toBe('http://ada-laptop:7450');
    expect(collectorUrl('192.168.1.20', 7451, 'ada-laptop')).toBe('http://192.168.1.20:7451');
    expect(collectorUrl('::1', 7450, 'ada-laptop')).toBe('http://[::1]:7450');
  });

  it('writes the commands to run, quoted for a shell', () => {
    expect(agentCommands('pk_abc123', 'http://ada-laptop:7450', null)).toEqual([
      'echo pk_abc123 | sudo procyon-agent set-key',
      'sudo procyon-agent --collector http://ada-laptop:7450',
    ]);
    expect(agentCommands('pk_x', 'http://10.0.0.5:7450', 'web 1')[1]).toBe("sudo procyon-agent --collector http://10.0.0.5:7450 --hostname 'web 1'");
    expect(shellQuote("it's; rm -rf /")).toBe("'it'\\''s; rm -rf /'");
  });
});
