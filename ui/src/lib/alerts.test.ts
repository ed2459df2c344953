import { describe, expect, it } from 'vitest';
import { METRICS, absentRuleFor, channelTarget, describeRule, emptyForm, formFromRule, isProblem, ruleFromForm, type RuleForm } from './alerts';

function form(patch: Partial<RuleForm>): RuleForm {
  return { ...emptyForm(), name: 'r', threshold: '90', ...patch };
}

describe('rule forms', () => {
  it('turn into the rule the collector takes, and back', () => {
    const rule = ruleFromForm(
      form({ metric: 'process.cpu_percent', host: 'web-1', process: 'name:nginx', threshold: '90', clear: '70', for_secs: '30', aggregate: 'sum', channels: ['ops'] }),
    );
    expect(isProblem(rule)).toBe(false);
    if (isProblem(rule)) return;
    expect(rule).toMatchObject({ metric: 'process.cpu_percent', host: 'web-1', process: 'name:nginx', op: '>', threshold: 90, clear: 70, for_secs: 30, aggregate: 'sum', channels: ['ops'] });
    expect(ruleFromForm(formFromRule(rule))).toEqual(rule);
  });

  it('leave out what a metric does not take', () => {
    const rule = ruleFromForm(form({ metric: 'host.offline', process: 'name:x', threshold: '5', for_secs: '120' }));
    expect(rule).toMatchObject({ process: null, op: null, threshold: null, clear: null, for_secs: 120 });
    const port = ruleFromForm(form({ metric: 'port.listening', port: '443', op: '==', threshold: '' }));
    expect(port).toMatchObject({ port: 443, op: '==', threshold: null });
  });

  it('name the field at fault', () => {
    const cases: [Partial<RuleForm>, string][] = [
      [{ name: ' ' }, 'name'],
      [{ name: 'a/b' }, 'name'],
      [{ host: 'two words' }, 'host'],
      [{ metric: 'process.absent', process: '' }, 'process'],
      [{ threshold: '' }, 'threshold'],
      [{ threshold: 'lots' }, 'threshold'],
      [{ clear: '95' }, 'clear'],
      [{ op: '<', threshold: '10', clear: '5' }, 'clear'],
      [{ op: '==', clear: '5' }, 'clear'],
      [{ metric: 'port.listening', port: '70000' }, 'port'],
      [{ for_secs: '1.5' }, 'for_secs'],
      [{ metric: 'host.offline', for_secs: '3' }, 'for_secs'],
      [{ repeat_secs: '5' }, 'repeat_secs'],
      [{ metric: 'host.disk_percent', mount: 'home' }, 'mount'],
      [{ metric: 'host.disk_percent', mount: '/home/' }, 'mount'],
      [{ metric: 'host.disk_percent', mount: '/a/../b' }, 'mount'],
    ];
    for (const [patch, field] of cases) {
      const r = ruleFromForm(form(patch));
      expect(isProblem(r) ? r.field : 'none', JSON.stringify(patch)).toBe(field);
    }
  });
});

describe('disk and temperature rules', () => {
  it('name a mount or a sensor, only where the metric takes one', () => {
    const disk = ruleFromForm(form({ metric: 'host.disk_percent', mount: '/home', threshold: '90', for_secs: '0' }));
    expect(disk).toMatchObject({ metric: 'host.disk_percent', mount: '/home', threshold: 90 });
    expect(isProblem(disk) ? null : describeRule(disk)).toBe('Disk space used of /home > 90');
    if (!isProblem(disk)) expect(ruleFromForm(formFromRule(disk))).toEqual(disk);
    const every = ruleFromForm(form({ metric: 'host.disk_percent', mount: '', threshold: '90' }));
    expect(every).toMatchObject({ mount: '*' });
    const hot = ruleFromForm(form({ metric: 'host.temperature', threshold: '80', for_secs: '0' }));
    expect(isProblem(hot) ? null : describeRule(hot)).toBe('Temperature of the hottest sensor > 80');
    const cpu = ruleFromForm(form({ metric: 'host.cpu_percent', mount: '/x', sensor: 'y' }));
    expect(cpu).not.toHaveProperty('mount');
    expect(cpu).not.toHaveProperty('sensor');
  });
});

describe('alert me when this goes away', () => {
  it('matches the name exactly on that host', () => {
    const r = absentRuleFor('my server', 'web-1');
    expect(r).toMatchObject({ metric: 'process.absent', host: 'web-1', process: 'name="my server"', channels: [] });
    expect(r && describeRule(r)).toBe('Process absent of name="my server" for 10 s');
  });

  it('refuses a name the filter language cannot quote', () => {
    expect(absentRuleFor('say "hi"', 'h')).toBeNull();
    expect(absentRuleFor('a/b', 'h')?.name).toBe('a-b gone on h');
  });
});

describe('every metric the collector takes', () => {
  it('is offered, host.new_listening_port among them, with its filter optional and no repeat', () => {
    expect(METRICS.map((m) => m.id)).toContain('host.new_listening_port');
    const any = ruleFromForm(form({ metric: 'host.new_listening_port', threshold: '', for_secs: '0' }));
    expect(any).toMatchObject({ metric: 'host.new_listening_port', process: null, op: null, threshold: null, repeat_secs: 0 });
    const some = ruleFromForm(form({ metric: 'host.new_listening_port', process: 'user:www-data', threshold: '' }));
    expect(some).toMatchObject({ process: 'user:www-data' });
    const repeat = ruleFromForm(form({ metric: 'host.new_listening_port', repeat_secs: '60' }));
    expect(isProblem(repeat) && repeat.field).toBe('repeat_secs');
    if (!isProblem(any)) expect(ruleFromForm(formFromRule(any))).toEqual(any);
  });
});

describe('channels', () => {
  it('show where they send without secrets', () => {
    const base = { name: 'c', url: '', token_set: false, read_only: false };
    expect(
      channelTarget({
        ...base,
        kind: 'email',
        email: { host: 'smtp.example', port: null, tls: 'starttls', username: 'u', password_set: true, from: 'a@x', to: ['b@x', 'c@x'] },
      }),
    ).toBe('smtp.example:587 (starttls) → b@x, c@x (password set)');
    expect(channelTarget({ ...base, kind: 'desktop' })).toBe('this desktop');
    expect(channelTarget({ ...base, kind: 'ntfy', url: 'https://ntfy.sh/…', token_set: true })).toBe('https://ntfy.sh/… (token set)');
  });
});
