// Is the network (or the server) reachable? Down when the browser says it is offline or a frame
// request got no answer at all; up again on the browser's `online` event or when a request
// succeeds. Listeners (the status line, the loader's retry of failed frames) hear each change.

import { FrameError } from './frames';

let down = false;
const listeners: Array<(down: boolean) => void> = [];

export function networkDown(): boolean {
  return down;
}

export function onNetworkChange(fn: (down: boolean) => void): void {
  listeners.push(fn);
}

function set(next: boolean): void {
  if (down === next) return;
  down = next;
  listeners.forEach((fn) => fn(down));
}

export function reportNetworkFailure(): void {
  set(true);
}

export function reportNetworkOk(): void {
  set(false);
}

/** Did this request get no answer at all (rather than a bad answer or an undecodable frame)?
 * Our frame workers flag fetch failures; Cornerstone's XHR loader rejects with the request
 * itself, status 0 when nothing came back. */
export function noAnswer(err: unknown): boolean {
  if (err instanceof FrameError) return err.network;
  if (typeof XMLHttpRequest !== 'undefined' && err instanceof XMLHttpRequest) return err.status === 0;
  return err instanceof TypeError && /fetch|network/i.test(err.message);
}

/** Did this load fail because of the network: no answer, or the browser is offline? */
export function isNetworkError(err: unknown): boolean {
  return navigator.onLine === false || noAnswer(err);
}

window.addEventListener('offline', () => set(true));
window.addEventListener('online', () => set(false));
