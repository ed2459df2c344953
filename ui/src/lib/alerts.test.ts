import { describe, expect, it } from 'vitest';
import { absentRuleFor, describeRule, emptyForm, formFromRule, isProblem, ruleFromForm, type RuleForm } from './alerts';

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
