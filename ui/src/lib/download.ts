// Saving a file the dashboard fetched or made (exports). Exports need the sign-in
// token, which must not go into a link, so they are fetched first and handed to the
// browser as a Blob.

import type { Download } from './transport';

export function saveDownload({ filename, blob }: Download): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  a.rel = 'noopener';
  document.body.append(a);
  a.click();
  a.remove();
  // Give the browser time to start the download before the URL goes.
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
}

/** A file made in the page (the rows of the current view). */
export function saveText(filename: string, text: string, type: string): void {
  saveDownload({ filename, blob: new Blob([text], { type }) });
}
