// Process actions in words: the verb on the button, what the action will do (said in
// the confirmation dialog), and a heading for each kind of refusal the server can give,
// shown above the server's own explanation.

import type { ProcessAction } from './model';

export const VERB: Record<ProcessAction, string> = {
  suspend: 'Suspend',
  resume: 'Resume',
  terminate: 'Terminate',
  kill: 'Kill',
};

/** What the action does, for the confirmation. Signal names are left out on Windows,
 *  which has none. */
export function actionEffect(action: ProcessAction, tree: boolean, descendants: number, windows = false): string {
  const sig = (name: string) => (windows ? '' : ` (${name})`);
  const who = tree ? `It and its ${descendants} descendant${descendants === 1 ? '' : 's'}` : 'It';
  switch (action) {
    case 'suspend':
      return `${who} will stop running until resumed${sig('SIGSTOP')}. Open files and connections stay open.`;
    case 'resume':
      return `${who} will continue where it stopped${sig('SIGCONT')}.`;
    case 'terminate':
      return `${who} will be asked to exit${sig('SIGTERM')} and may clean up first${tree ? ', children first' : ''}.`;
    case 'kill':
      return `${who} will be stopped at once${sig('SIGKILL')}${tree ? ', children first' : ''}. Nothing gets to clean up; unsaved work is lost.`;
  }
}

/** A heading for a refusal, by the server's error code (`{error}`) and status. */
export function errorTitle(code: string, status: number): string {
  switch (code) {
    case 'pid_reused':
      return 'That pid belongs to a different process now';
    case 'protected':
      return 'Procyon protects this process';
    case 'forbidden':
      return 'Your account may not act on processes';
    case 'permission_denied':
      return 'Permission denied';
    case 'not_found':
      return 'The process is gone';
    case 'unavailable':
      return 'The host cannot be reached';
    case 'timeout':
      return 'The host did not answer in time';
    case 'unsupported':
      return 'Not possible on this host';
    case 'unauthorized':
      return 'Your sign-in has expired';
    case 'network':
      return 'The collector cannot be reached';
    default:
      return status >= 500 ? 'The action failed on the server' : 'The action was refused';
  }
}
