// Streaming (边下边播): the image on screen first, then the rest of the series under view from
// the current slice outwards, then the other series. Decoded frames stay in Cornerstone's cache,
// so scrolling back never fetches again.

import { Enums, cache, imageLoader } from '@cornerstonejs/core';
import { isNetworkError, networkDown, onNetworkChange, reportNetworkFailure, reportNetworkOk } from './network';
import type { SeriesEntry } from './study';

// Requests in flight, counted until decoded: more than the browser's 6 connections per host, so
// the network keeps busy while frames wait for a decode worker.
const CONCURRENCY = 16;

interface Job {
  series: SeriesEntry;
  imageId: string;
}

let queue: Job[] = [];
let running = false;
let inFlight = 0;
const inFlightIds = new Set<string>();
let order: SeriesEntry[] = [];
let focus: { series: SeriesEntry; index: number } | null = null;
const doneListeners: Array<(s: SeriesEntry) => void> = [];

export function onSeriesLoaded(fn: (s: SeriesEntry) => void): void {
  doneListeners.push(fn);
}

/** Frames whose load got no answer (network down): queued again once it is back. */
const netFailed = new Map<string, SeriesEntry>();
let probeTimer = 0;
let probeDelay = 0;

/** A frame of `series` was cached (`ok`) or failed; `network`: it failed for want of an answer.
 * A frame counts once, as loaded or as failed (a failed frame that loads later moves over). */
export function markLoaded(series: SeriesEntry, imageId: string, ok: boolean, network = false): void {
  if (ok) {
    const wasFailed = series.failedIds.delete(imageId);
    netFailed.delete(imageId);
    const isNew = !series.loadedIds.has(imageId);
    series.loadedIds.add(imageId);
    // An answer came: the network works (again), frames that failed are queued again.
    reportNetworkOk();
    if (!isNew && !wasFailed) return;
  } else {
    if (series.loadedIds.has(imageId)) return;
    if (network) {
      netFailed.set(imageId, series);
      reportNetworkFailure();
      scheduleProbe();
    }
    if (series.failedIds.has(imageId)) return;
    series.failedIds.add(imageId);
  }
  series.onProgress.forEach((fn) => fn());
  if (series.loadedIds.size + series.failedIds.size === series.imageIds.length) {
    // Frames waiting for the network are not done: loadedAt comes once they are in.
    if (![...series.failedIds].some((id) => netFailed.has(id))) series.loadedAt ??= performance.now();
    doneListeners.forEach((fn) => fn(series));
  }
}

/** Queue again every frame that failed for want of an answer (the network is back). */
function retryNetworkFailures(): void {
  clearTimeout(probeTimer);
  probeTimer = 0;
  probeDelay = 0;
  if (!netFailed.size) return;
  const touched = new Set<SeriesEntry>();
  for (const [id, s] of netFailed) {
    s.failedIds.delete(id);
    touched.add(s);
  }
  netFailed.clear();
  touched.forEach((s) => s.onProgress.forEach((fn) => fn()));
  rebuild();
  pump();
}

/** While the network seems down but the browser thinks it is online (the server alone is
 * unreachable), try one failed frame now and then (2 s, doubling up to 30 s): its success
 * brings everything back. An offline browser waits for its `online` event instead. */
function scheduleProbe(): void {
  if (probeTimer || !running) return;
  probeDelay = Math.min(30_000, probeDelay ? probeDelay * 2 : 2_000);
  probeTimer = window.setTimeout(() => {
    probeTimer = 0;
    if (!networkDown() || !netFailed.size) return;
    if (navigator.onLine === false) {
      scheduleProbe();
      return;
    }
    // The frame the user looks at, else any.
    let pick: [string, SeriesEntry] | undefined;
    const want = focus?.series.imageIds[focus.index];
    if (want && netFailed.has(want)) pick = [want, netFailed.get(want)!];
    pick ??= netFailed.entries().next().value as [string, SeriesEntry];
    const [imageId, series] = pick;
    netFailed.delete(imageId);
    series.failedIds.delete(imageId);
    queue.unshift({ series, imageId });
    pump();
  }, probeDelay);
}

onNetworkChange((down) => {
  if (!down) retryNetworkFailures();
});

function centreOut(n: number, start: number): number[] {
  const out: number[] = [];
  const s = Math.max(0, Math.min(n - 1, start));
  out.push(s);
  for (let d = 1; out.length < n; d++) {
    if (s + d < n) out.push(s + d);
    if (s - d >= 0) out.push(s - d);
  }
  return out;
}

function rebuild(): void {
  const seen = new Set<string>();
  const jobs: Job[] = [];
  const add = (series: SeriesEntry, indices: number[]) => {
    for (const i of indices) {
      const imageId = series.imageIds[i];
      if (!imageId || seen.has(imageId)) continue;
      seen.add(imageId);
      if (series.loadedIds.has(imageId) || series.failedIds.has(imageId) || inFlightIds.has(imageId)) continue;
      jobs.push({ series, imageId });
    }
  };
  if (focus && focus.series.imageIds.length) add(focus.series, centreOut(focus.series.imageIds.length, focus.index));
  for (const s of order) {
    if (s.imageIds.length) add(s, centreOut(s.imageIds.length, 0));
  }
  queue = jobs;
}

function pump(): void {
  if (!running) return;
  while (inFlight < CONCURRENCY && queue.length) {
    const job = queue.shift()!;
    if (cache.getImageLoadObject(job.imageId) && job.series.loadedIds.has(job.imageId)) continue;
    inFlight++;
    inFlightIds.add(job.imageId);
    imageLoader
      .loadAndCacheImage(job.imageId, { priority: 0, requestType: Enums.RequestType.Prefetch } as any)
      .then(
        () => markLoaded(job.series, job.imageId, true),
        (err) => markLoaded(job.series, job.imageId, false, isNetworkError(err)),
      )
      .finally(() => {
        inFlight--;
        inFlightIds.delete(job.imageId);
        pump();
      });
  }
}

/** The user looks at `index` of `series`: load around it first. */
export function setFocus(series: SeriesEntry, index: number): void {
  focus = { series, index };
  rebuild();
  pump();
}

/** Series to prefetch after the focused one, in this order. */
export function setOrder(series: SeriesEntry[]): void {
  order = series;
  rebuild();
  pump();
}

export function refresh(): void {
  rebuild();
  pump();
}

/** Start prefetching: called once the first image is on screen, so it never competes with it. */
export function startPrefetch(): void {
  if (running) return;
  running = true;
  // boot.ts may have been fetching the first series: from here this queue decides.
  (window as any).__cfBoot?.stopPrefetch?.();
  rebuild();
  pump();
}
