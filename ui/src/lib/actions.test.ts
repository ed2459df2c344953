// Process actions in words: dialog sentences and refusal headings.

import { describe, expect, it } from 'vitest';
import { actionEffect, errorTitle } from './actions';

describe('actions in words', () => {
  it('says what each action does, with the signal where there are signals', () => {
    expect(actionEffect('suspend', false, 0)).toContain('SIGSTOP');
    expect(actionEffect('kill', false, 0, true)).not.toContain('SIG');
    expect(actionEffect('kill', true, 3)).toMatch(/^It and its 3 descendants .*children first/);
    expect(actionEffect('terminate', true, 1)).toContain('1 descendant ');
  });
  it('titles every refusal the server gives', () => {
    expect(errorTitle('pid_reused', 409)).toMatch(/different process/);
    expect(errorTitle('protected', 403)).toMatch(/protects/);
    expect(errorTitle('forbidden', 403)).toMatch(/may not act/);
    expect(errorTitle('permission_denied', 403)).toBe('Permission denied');
    expect(errorTitle('unavailable', 503)).toMatch(/cannot be reached/);
    expect(errorTitle('something_new', 500)).toMatch(/failed on the server/);
    expect(errorTitle('something_new', 400)).toMatch(/refused/);
  });
});
