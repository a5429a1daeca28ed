// First paint, before Cornerstone3D is even parsed. start.ts (inlined in index.html) has already
// asked DICOMweb for the series list, the first series' metadata and the frame shown first;
// this small module starts the big viewer bundle downloading and, when that frame is
// uncompressed greyscale or RGB, draws it at once on a 2D canvas (modality LUT + the file's
// window, MONOCHROME1 inverted): the radiologist sees the real image while the WebGL viewer
// starts, which then takes over the same slice. Compressed frames wait for the viewer's WASM
// decoders. It also starts the frame workers (frames.ts) and, once the bundle has arrived, has
// them fetch the rest of the first series while the bundle compiles.

import type { DicomJson } from './dicomweb';
import { FramePool, type FrameResult, MULTIPART, type PixelParams, SINGLE_PART, firstPart, pixelParamsFromJson, processNative } from './frames';

export { MULTIPART, SINGLE_PART };

export interface BootData {
  token: string | null;
  studyUids: string[];
  seriesLists: Map<string, Promise<Response>>;
  firstMetadata?: Promise<{ studyUID: string; seriesUID: string; metadata: DicomJson[] } | null>;
  preview?: HTMLCanvasElement;
  previewAt?: number;
  previewIndex?: number;
  previewSeries?: string;
  /** The server answered a frame single-part when offered both: ask for all frames that way. */
  singlePart?: boolean;
  /** Frame fetching workers, shared with the viewer's image loader (fastloader.ts). */
  frames?: FramePool;
  /** The viewer's loader took over: boot starts no more frame requests. */
  stopPrefetch?: () => void;
}

const T0 = performance.now();

/** What start.ts (inlined in index.html) began before this module was even fetched. */
interface Start {
  token: string | null;
  studyUids: string[];
  root: string;
  seriesLists: Map<string, Promise<Response>>;
  firstMetadata: Promise<FirstSeries | null>;
  previewFrame: Promise<{ url: string; ds: DicomJson; res: Response } | null>;
}
interface FirstSeries {
  studyUID: string;
  seriesUID: string;
  metadata: DicomJson[];
  ordered: DicomJson[];
  first: number;
}

const start: Start = (window as any).__cfStart;
const root = start.root;
const boot: BootData = {
  token: start.token,
  studyUids: start.studyUids,
  seriesLists: start.seriesLists,
  firstMetadata: start.firstMetadata,
};
(window as any).__cfBoot = boot;

const v = (ds: DicomJson | undefined, tag: string, i = 0): any => ds?.[tag]?.Value?.[i];

function frameUrl(studyUID: string, seriesUID: string, ds: DicomJson, frame = 1): string {
  return `${root}/studies/${studyUID}/series/${seriesUID}/instances/${v(ds, '00080018')}/frames/${frame}`;
}

/** Start downloading the viewer bundle (named by the build in a data-main link): after the
 * first frame's response has begun, so on a slow line it does not compete with that frame.
 * When it has arrived, the frames of the first series start downloading too. */
let mainPrefetched = false;
function prefetchMain(): void {
  if (mainPrefetched) return;
  mainPrefetched = true;
  const links = document.querySelectorAll<HTMLLinkElement>('link[data-cf-main]');
  links.forEach((l) => {
    const p = document.createElement('link');
    p.rel = 'modulepreload';
    p.href = l.href;
    p.onload = p.onerror = () => void prefetchFirstSeries();
    document.head.append(p);
  });
  if (!links.length) void prefetchFirstSeries();
}

/** Frame requests in flight from here: enough to keep the browser's six connections busy. */
const BOOT_CONCURRENCY = Number(new URLSearchParams(location.search).get('bootconc') || 8);
const BOOT_START = new URLSearchParams(location.search).get('bootstart') || 'bundle';

/** The first series' frames, from the first slice outwards (the viewer's loader order), while
 * the viewer bundle is compiled and its WebGL context created. The workers fetch the list by
 * themselves; the viewer's image loader takes the results from the pool, and once the viewer's
 * own queue runs, the rest of the list is dropped. */
async function prefetchFirstSeries(): Promise<void> {
  const first = (await boot.firstMetadata) as FirstSeries | null;
  await previewDone;
  const pool = boot.frames;
  if (!pool || !first || boot.stopPrefetch || BOOT_START === 'viewer') return;
  const imgs = first.ordered;
  const urls: { url: string; params?: PixelParams }[] = [];
  for (const ds of imgs) {
    const frames = Number(v(ds, '00280008') ?? 1) || 1;
    const params = pixelParamsFromJson(ds);
    for (let f = 1; f <= frames; f++) urls.push({ url: frameUrl(first.studyUID, first.seriesUID, ds, f), params });
  }
  const s0 = Math.max(0, Math.min(urls.length - 1, first.first));
  const order = [urls[s0]];
  for (let d = 1; order.length < urls.length; d++) {
    if (s0 + d < urls.length) order.push(urls[s0 + d]);
    if (s0 - d >= 0) order.push(urls[s0 - d]);
  }
  boot.stopPrefetch = () => pool.stopLists();
  performance.mark('cf:boot-prefetch');
  pool.prefetchList(order, BOOT_CONCURRENCY);
}

/** Draw a greyscale frame (already through the modality LUT when `scaled`) with a window. */
function drawGrey(
  px: ArrayLike<number>,
  n: number,
  ds: DicomJson,
  scaled: boolean,
  range: { min: number; max: number },
): Uint8ClampedArray<ArrayBuffer> {
  const slope = scaled ? 1 : Number(v(ds, '00281053') ?? 1);
  const intercept = scaled ? 0 : Number(v(ds, '00281052') ?? 0);
  let wc = Number(v(ds, '00281050'));
  let ww = Number(v(ds, '00281051'));
  const lo0 = Math.min(range.min * slope + intercept, range.max * slope + intercept);
  const hi0 = Math.max(range.min * slope + intercept, range.max * slope + intercept);
  if (!Number.isFinite(wc) || !Number.isFinite(ww) || ww <= 0) {
    ww = Math.max(1, hi0 - lo0);
    wc = (hi0 + lo0) / 2;
  }
  const invert = String(v(ds, '00280004') ?? '') === 'MONOCHROME1';
  // DICOM linear VOI LUT (PS3.3 C.11.2.1.2), as a table over the stored values when they are
  // integers in a modest range (one lookup per pixel), else computed per pixel.
  const lo = wc - 0.5 - (ww - 1) / 2;
  const k = 255 / Math.max(1e-6, ww - 1);
  const grey = (x: number) => {
    const y = x * slope + intercept;
    const g = y <= lo ? 0 : y > lo + ww - 1 ? 255 : Math.round((y - lo) * k);
    return invert ? 255 - g : g;
  };
  const rgba = new Uint8ClampedArray(n * 4);
  const out = new Uint32Array(rgba.buffer);
  const little = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
  const word = (g: number) => (little ? (0xff000000 | (g << 16) | (g << 8) | g) >>> 0 : ((g << 24) | (g << 16) | (g << 8) | 0xff) >>> 0);
  const span = range.max - range.min;
  if (Number.isInteger(range.min) && Number.isInteger(range.max) && span <= 1 << 17) {
    const lut = new Uint32Array(span + 1);
    for (let i = 0; i <= span; i++) lut[i] = word(grey(range.min + i));
    const base = range.min;
    for (let i = 0; i < n; i++) out[i] = lut[px[i] - base];
  } else {
    for (let i = 0; i < n; i++) out[i] = word(grey(px[i]));
  }
  return rgba;
}

async function preview(): Promise<void> {
  const frame = await start.previewFrame;
  const first = (await boot.firstMetadata) as FirstSeries | null;
  if (!frame || !first) return prefetchMain();
  prefetchMain();
  if (BOOT_START === 'now') void prefetchFirstSeries();
  const { ds, res, url } = frame;
  const rows = Number(v(ds, '00280010'));
  const cols = Number(v(ds, '00280011'));
  const bits = Number(v(ds, '00280100') ?? 16);
  const spp = Number(v(ds, '00280002') ?? 1);
  const pi = String(v(ds, '00280004') ?? 'MONOCHROME2');
  const planar = Number(v(ds, '00280006') ?? 0);
  if (res.ok) {
    // The viewer keeps to what worked for all frames.
    boot.singlePart = !(res.headers.get('content-type') ?? '').startsWith('multipart/');
    boot.frames?.setSinglePart(boot.singlePart);
  }
  if (!rows || !cols || !(spp === 1 || (spp === 3 && pi === 'RGB' && planar === 0 && bits === 8))) return;
  if (!res.ok) return;
  performance.mark('cf:preview-response');
  const buf = new Uint8Array(await res.arrayBuffer());
  performance.mark('cf:preview-body');
  const part = firstPart(buf, res.headers.get('content-type') ?? '');
  if (!part) return;
  const ts = /transfer-syntax="?([0-9.]+)/i.exec(part.type)?.[1] ?? '1.2.840.10008.1.2.1';
  if (ts !== '1.2.840.10008.1.2.1' && ts !== '1.2.840.10008.1.2') return;
  const n = rows * cols;
  let rgba: Uint8ClampedArray<ArrayBuffer>;
  if (spp === 3) {
    const bytes = part.data;
    if (bytes.length < n * 3) return;
    rgba = new Uint8ClampedArray(n * 4);
    for (let i = 0; i < n; i++) {
      rgba[4 * i] = bytes[3 * i];
      rgba[4 * i + 1] = bytes[3 * i + 1];
      rgba[4 * i + 2] = bytes[3 * i + 2];
      rgba[4 * i + 3] = 255;
    }
  } else {
    // The frame as the viewer's loader would make it (modality LUT applied): drawn here, then
    // handed to the viewer so it is not fetched again.
    const params = pixelParamsFromJson(ds);
    const native = params ? processNative(part.data, params) : null;
    if (native) {
      native.transferSyntax = ts;
      rgba = drawGrey(native.pixels, n, ds, native.scaled, native);
      previewResult = { url, native };
    } else {
      const bytes = part.data;
      if (bytes.length < (n * bits) / 8) return;
      const aligned = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
      const signed = Number(v(ds, '00280103') ?? 0) === 1;
      const px =
        bits === 8
          ? aligned
          : signed
            ? new Int16Array(aligned.buffer, aligned.byteOffset, n)
            : new Uint16Array(aligned.buffer, aligned.byteOffset, n);
      let min = Infinity;
      let max = -Infinity;
      for (let i = 0; i < n; i++) {
        if (px[i] < min) min = px[i];
        if (px[i] > max) max = px[i];
      }
      rgba = drawGrey(px, n, ds, false, { min, max });
    }
  }
  performance.mark('cf:preview-decoded');
  const canvas = document.createElement('canvas');
  canvas.width = cols;
  canvas.height = rows;
  canvas.className = 'cf-preview';
  canvas.getContext('2d')!.putImageData(new ImageData(rgba, cols, rows), 0, 0);
  if (boot.preview === null) return; // the viewer was faster
  const holder = document.getElementById('cf-preview-holder') ?? document.body;
  holder.append(canvas);
  boot.preview = canvas;
  boot.previewAt = performance.now();
  boot.previewSeries = first.seriesUID;
  document.body.dataset.previewAt = String(Math.round(boot.previewAt));
}

/** Frame workers: `?fworkers=N` (0 turns the fast path off, for comparisons). */
function frameWorkers(): number {
  const q = new URLSearchParams(location.search).get('fworkers');
  if (q !== null && Number(q) >= 0 && Number(q) <= 8) return Math.floor(Number(q));
  // One: measured faster than two on the shared 2-core machine (less contention with the
  // main thread, the network process and the server); each worker keeps many requests going.
  return 1;
}

/** The frame workers, started once the first frame is on its way (not needed before, and
 * starting them costs the main thread time the first image needs). */
let previewResult: { url: string; native: FrameResult } | undefined;

function startPool(): void {
  const nWorkers = frameWorkers();
  if (boot.frames || nWorkers <= 0 || typeof Worker === 'undefined') return;
  try {
    boot.frames = new FramePool(nWorkers, (): Record<string, string> => (boot.token ? { Authorization: `Bearer ${boot.token}` } : {}));
    if (boot.singlePart !== undefined) boot.frames.setSinglePart(boot.singlePart);
    if (previewResult) boot.frames.put(previewResult.url, previewResult.native);
  } catch (e) {
    console.warn('frame workers unavailable', e);
  }
}
// The viewer bundle (a few MB of JavaScript) is fetched in the background from the start (a
// prefetch link added at build time) but only evaluated once the preview is painted, so
// compiling it never delays the first image. At most 800 ms are spent waiting for the preview.
const previewDone = boot.studyUids.length ? preview().catch(() => undefined).finally(startPool) : Promise.resolve();
setTimeout(prefetchMain, 400);
void Promise.race([previewDone, new Promise((r) => setTimeout(r, 800))]).then(() => {
  requestAnimationFrame(() => setTimeout(() => void import('./main'), 0));
});
void T0;
