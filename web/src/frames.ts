// Frame retrieval off the main thread. WADO-RS frames are fetched by small dedicated workers
// (frameWorker.ts), not by Cornerstone's XHR + decode-worker round trip: for uncompressed
// (native) greyscale frames the worker applies the modality LUT exactly as Cornerstone's decoder
// would (same output type, same min/max) and hands the pixel buffer over without a copy; any
// other transfer syntax comes back as the raw frame bytes for Cornerstone's WASM decoders.
//
// boot.ts starts the pool and begins fetching the first series while the viewer bundle is still
// loading; the viewer's image loader (fastloader.ts) takes those results from the same pool.
// Nothing here imports Cornerstone: this module is part of the small boot chunk.

export const NATIVE_SYNTAXES = new Set(['1.2.840.10008.1.2', '1.2.840.10008.1.2.1']);

/** What the worker needs to turn native bytes into Cornerstone's pre-scaled pixel array. */
export interface PixelParams {
  rows: number;
  columns: number;
  bitsAllocated: number;
  bitsStored: number;
  pixelRepresentation: number;
  samplesPerPixel: number;
  /** Present when the modality LUT is to be applied (integer slope ≥ 1 and integer intercept). */
  slope?: number;
  intercept?: number;
}

export type FrameResult =
  | {
      kind: 'native';
      transferSyntax: string;
      pixels: Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Float32Array;
      min: number;
      max: number;
      scaled: boolean;
      slope?: number;
      intercept?: number;
    }
  | { kind: 'raw'; transferSyntax: string; contentType: string; bytes: Uint8Array };

export const SINGLE_PART = 'application/octet-stream; transfer-syntax=*';
export const MULTIPART = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';

/** Transfer syntax named by a frame's content type (Cornerstone's rule: implicit VR LE if none). */
export function transferSyntaxOf(contentType: string): string {
  const m = /transfer-syntax="?([0-9.]+)/i.exec(contentType);
  if (m) return m[1];
  const type = contentType.split(';')[0].trim().toLowerCase();
  const byType: Record<string, string> = {
    'image/jpeg': '1.2.840.10008.1.2.4.50',
    'image/x-dicom-rle': '1.2.840.10008.1.2.5',
    'image/x-jls': '1.2.840.10008.1.2.4.80',
    'image/jls': '1.2.840.10008.1.2.4.80',
    'image/jll': '1.2.840.10008.1.2.4.70',
    'image/jp2': '1.2.840.10008.1.2.4.90',
    'image/jpx': '1.2.840.10008.1.2.4.92',
    'image/jxl': '1.2.840.10008.1.2.4.110',
    'image/jphc': '3.2.840.10008.1.2.4.96',
  };
  return byType[type] ?? '1.2.840.10008.1.2';
}

function indexOf(buf: Uint8Array, needle: Uint8Array, from: number, to = buf.length): number {
  const first = needle[0];
  const last = to - needle.length;
  outer: for (let i = buf.indexOf(first, from); i !== -1 && i <= last; i = buf.indexOf(first, i + 1)) {
    for (let j = 1; j < needle.length; j++) if (buf[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function lastIndexOf(buf: Uint8Array, needle: Uint8Array, from: number): number {
  for (let i = buf.length - needle.length; i >= from; i--) {
    let j = 0;
    while (j < needle.length && buf[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}

/** The first part of a (possibly multipart) body, and its content type. A frame request asks
 * for one frame, so the part's end is found from the closing delimiter at the end of the body:
 * the 512 kB of pixels are never scanned. */
export function firstPart(buf: Uint8Array, contentType: string): { data: Uint8Array; type: string } | null {
  if (!/^multipart\//i.test(contentType.trim())) return { data: buf, type: contentType };
  const m = /boundary="?([^";]+)"?/i.exec(contentType);
  if (!m) return null;
  const enc = new TextEncoder();
  const delim = enc.encode(`--${m[1]}`);
  const start = indexOf(buf, delim, 0, Math.min(buf.length, 4096));
  if (start < 0) return null;
  const headerEnd = indexOf(buf, enc.encode('\r\n\r\n'), start, Math.min(buf.length, start + 4096));
  if (headerEnd < 0) return null;
  const head = new TextDecoder().decode(buf.subarray(start, headerEnd));
  const bodyStart = headerEnd + 4;
  // The part ends at the next delimiter: usually the closing one near the end of the body.
  const closing = enc.encode(`\r\n--${m[1]}`);
  let end = lastIndexOf(buf, closing, bodyStart);
  // Several parts (a server that sent more than asked): the first delimiter after the body.
  const next = end > bodyStart ? indexOf(buf, closing, bodyStart, end) : -1;
  if (next >= 0) end = next;
  const type = /content-type:\s*([^\r\n]+)/i.exec(head)?.[1]?.trim() ?? 'application/octet-stream';
  return { data: buf.subarray(bodyStart, end < 0 ? buf.length : end), type };
}

type Ctor = Uint8ArrayConstructor | Int8ArrayConstructor | Uint16ArrayConstructor | Int16ArrayConstructor | Uint32ArrayConstructor | Float32ArrayConstructor;

/** Cornerstone's choice of pixel array type for a value range (getPixelDataTypeFromMinMax). */
export function typeForRange(min: number, max: number): Ctor {
  if (Number.isInteger(min) && Number.isInteger(max)) {
    if (min >= 0) {
      if (max <= 255) return Uint8Array;
      if (max <= 65535) return Uint16Array;
      if (max <= 4294967295) return Uint32Array;
    } else {
      if (min >= -128 && max <= 127) return Int8Array;
      if (min >= -32768 && max <= 32767) return Int16Array;
    }
  }
  return Float32Array;
}

/**
 * Native little-endian greyscale bytes → the pixel array Cornerstone's decoder would produce:
 * sign extension of signed samples narrower than 16 bits, the modality LUT applied (when
 * `slope`/`intercept` are given), the array type chosen from the value range, and that range.
 * Works in place when the type keeps its width. Returns null for anything it does not cover
 * (the caller then uses Cornerstone's own decoder).
 */
export function processNative(bytes: Uint8Array, p: PixelParams): Extract<FrameResult, { kind: 'native' }> | null {
  const n = p.rows * p.columns;
  if (p.samplesPerPixel !== 1 || !n) return null;
  let src: Uint8Array | Uint16Array | Int16Array;
  if (p.bitsAllocated === 16) {
    if (bytes.byteLength < 2 * n) return null;
    // A view on its own buffer, at offset 0: the result is handed over whole.
    const own = bytes.byteOffset === 0 && bytes.buffer.byteLength === 2 * n ? bytes : bytes.slice(0, 2 * n);
    src = p.pixelRepresentation === 1 ? new Int16Array(own.buffer, 0, n) : new Uint16Array(own.buffer, 0, n);
    if (p.pixelRepresentation === 1 && p.bitsStored < 16) {
      const shift = 32 - p.bitsStored;
      for (let i = 0; i < n; i++) src[i] = (src[i] << shift) >> shift;
    }
  } else if (p.bitsAllocated === 8 && p.pixelRepresentation === 0) {
    if (bytes.byteLength < n) return null;
    src = bytes.byteOffset === 0 && bytes.buffer.byteLength === n ? bytes : bytes.slice(0, n);
  } else {
    return null;
  }
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = src[i];
    if (x < min) min = x;
    if (x > max) max = x;
  }
  const scale = p.slope !== undefined && p.intercept !== undefined && !(p.slope === 1 && p.intercept === 0);
  if (!scale) {
    // Cornerstone keeps the raw values in the narrowest type that holds their range.
    const T = typeForRange(min, max);
    const pixels = T === src.constructor ? src : new T(src);
    return { kind: 'native', transferSyntax: '', pixels, min, max, scaled: false };
  }
  const slope = p.slope!;
  const intercept = p.intercept!;
  const smin = min * slope + intercept;
  const smax = max * slope + intercept;
  const T = typeForRange(smin, smax);
  const out = T.BYTES_PER_ELEMENT === src.BYTES_PER_ELEMENT ? new T(src.buffer as ArrayBuffer, 0, n) : new T(n);
  if (slope === 1) for (let i = 0; i < n; i++) out[i] = src[i] + intercept;
  else for (let i = 0; i < n; i++) out[i] = src[i] * slope + intercept;
  return { kind: 'native', transferSyntax: '', pixels: out, min: smin, max: smax, scaled: true, slope, intercept };
}

/** Pixel parameters from a DICOM JSON dataset (the series' WADO-RS metadata), or undefined
 * when the fast path does not apply (colour, PET/dose scaling, fractional rescale, …). */
export function pixelParamsFromJson(ds: Record<string, { Value?: any[] }>): PixelParams | undefined {
  const v = (tag: string) => ds[tag]?.Value?.[0];
  const modality = String(v('00080060') ?? '');
  if (modality === 'PT' || modality === 'RTDOSE') return undefined;
  if (ds['00283000']?.Value?.length) return undefined; // a modality LUT sequence
  return pixelParams({
    rows: Number(v('00280010')),
    columns: Number(v('00280011')),
    bitsAllocated: Number(v('00280100')),
    bitsStored: Number(v('00280101') ?? v('00280100')),
    pixelRepresentation: Number(v('00280103') ?? 0),
    samplesPerPixel: Number(v('00280002') ?? 1),
    photometric: String(v('00280004') ?? 'MONOCHROME2'),
    slope: v('00281053'),
    intercept: v('00281052'),
  });
}

export function pixelParams(m: {
  rows: number;
  columns: number;
  bitsAllocated: number;
  bitsStored: number;
  pixelRepresentation: number;
  samplesPerPixel: number;
  photometric: string;
  slope: unknown;
  intercept: unknown;
}): PixelParams | undefined {
  if (m.samplesPerPixel !== 1 || !/^MONOCHROME[12]$/.test(m.photometric)) return undefined;
  if (!(m.rows > 0 && m.columns > 0)) return undefined;
  if (!(m.bitsAllocated === 16 || (m.bitsAllocated === 8 && m.pixelRepresentation === 0))) return undefined;
  const hasSlope = m.slope !== undefined && m.slope !== null && m.slope !== '';
  const hasIntercept = m.intercept !== undefined && m.intercept !== null && m.intercept !== '';
  const slope = hasSlope ? Number(m.slope) : 1;
  const intercept = hasIntercept ? Number(m.intercept) : 0;
  if (!Number.isInteger(slope) || !Number.isInteger(intercept) || slope < 1) return undefined;
  const out: PixelParams = {
    rows: m.rows,
    columns: m.columns,
    bitsAllocated: m.bitsAllocated,
    bitsStored: m.bitsStored || m.bitsAllocated,
    pixelRepresentation: m.pixelRepresentation,
    samplesPerPixel: 1,
  };
  if (slope !== 1 || intercept !== 0) {
    out.slope = slope;
    out.intercept = intercept;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The pool (main thread side).

export interface FrameRequestMessage {
  type: 'get';
  id: number;
  url: string;
  headers: Record<string, string>;
  /** Alternative Accept when the server answers 400/406 to the first (Orthanc). */
  fallbackAccept?: string;
  priority: 'high' | 'low' | 'auto';
  params?: PixelParams;
}

/** A list for the worker to fetch by itself, `concurrency` at a time, in order: it keeps going
 * while the main thread is busy (compiling the viewer bundle, creating the WebGL context). */
export interface FrameListMessage {
  type: 'list';
  items: FrameRequestMessage[];
  concurrency: number;
}

/** Drop the list's requests not yet started (each answered `cancelled`). */
export interface FrameStopMessage {
  type: 'stop';
}

export type FrameWorkerMessage = FrameRequestMessage | FrameListMessage | FrameStopMessage;

export type FrameReplyMessage =
  | { id: number; ok: true; result: FrameResult; usedFallback: boolean; timing?: [number, number] }
  | { id: number; ok: false; status: number; message: string; cancelled?: boolean; network?: boolean };

export class FrameError extends Error {
  constructor(
    message: string,
    public status: number,
    /** No answer at all (fetch failed: network down or server unreachable), not a bad frame. */
    public network = false,
  ) {
    super(message);
    this.name = 'FrameError';
  }
}

interface Pending {
  resolve: (r: FrameResult) => void;
  reject: (e: Error) => void;
  worker: number;
  url: string;
  params?: PixelParams;
}

export class FramePool {
  private workers: Worker[] = [];
  private load: number[] = [];
  private nextId = 1;
  private pending = new Map<number, Pending>();
  /** Requests started (by boot or the loader) whose result nobody has taken yet. */
  private started = new Map<string, { id: number; promise: Promise<FrameResult> }>();
  inFlight = 0;
  /** For measurements: when each frame arrived, how many came native or raw, milliseconds
   * spent waiting for bodies (summed over concurrent requests) and processing them. */
  doneAt: number[] = [];
  kinds = { native: 0, raw: 0 };
  bodyMs = 0;
  processMs = 0;
  accept = `${SINGLE_PART}, ${MULTIPART}`;
  fallbackAccept: string | undefined = MULTIPART;

  constructor(
    count: number,
    private headers: () => Record<string, string>,
  ) {
    for (let i = 0; i < count; i++) {
      const w = new Worker(new URL('./frameWorker.ts', import.meta.url), { type: 'module', name: `cf-frames-${i}` });
      w.onmessage = (e: MessageEvent<FrameReplyMessage>) => this.reply(e.data);
      w.onerror = (e) => console.warn('frame worker error', e.message);
      this.workers.push(w);
      this.load.push(0);
    }
  }

  /** The server answered single-part (or only multipart): ask that way from now on. */
  setSinglePart(single: boolean): void {
    this.accept = single ? `${SINGLE_PART}, ${MULTIPART}` : MULTIPART;
    this.fallbackAccept = single ? MULTIPART : undefined;
  }

  private reply(msg: FrameReplyMessage): void {
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    this.load[p.worker]--;
    this.inFlight--;
    if (!msg.ok && msg.cancelled) {
      // Not fetched: forget it if nobody asked for it yet, else fetch it now for whoever did.
      if (this.started.get(p.url)?.id === msg.id) {
        this.started.delete(p.url);
        p.reject(new FrameError('cancelled', 0));
      } else {
        this.request(p.url, p.params, 'high').then(p.resolve, p.reject);
      }
      return;
    }
    this.doneAt.push(performance.now());
    // A failure nobody has asked for yet is forgotten: a later take() fetches again (the network
    // may be back by then) instead of getting a stale error.
    if (!msg.ok && this.started.get(p.url)?.id === msg.id) this.started.delete(p.url);
    if (msg.ok) {
      this.kinds[msg.result.kind]++;
      if (msg.timing) {
        this.bodyMs += msg.timing[0];
        this.processMs += msg.timing[1];
      }
      // The server refused the first Accept (Orthanc answers 400 to the pair): keep to the other.
      if (msg.usedFallback && this.fallbackAccept) this.setSinglePart(false);
      p.resolve(msg.result);
    } else p.reject(new FrameError(msg.message, msg.status, msg.network === true));
  }

  has(url: string): boolean {
    return this.started.has(url);
  }

  /** Put a result obtained elsewhere (boot's preview frame). */
  put(url: string, result: FrameResult): void {
    this.started.set(url, { id: 0, promise: Promise.resolve(result) });
  }

  /** Fetch these frames in this order, `concurrency` at a time, driven by the workers
   * themselves; results wait for take(). Frames already started are skipped. */
  prefetchList(items: { url: string; params?: PixelParams }[], concurrency: number): void {
    const lists: FrameRequestMessage[][] = this.workers.map(() => []);
    let k = 0;
    for (const it of items) {
      if (this.started.has(it.url)) continue;
      const w = k++ % this.workers.length;
      const { id, promise } = this.enqueue(w, it.url, it.params, 'low');
      promise.catch(() => undefined);
      this.started.set(it.url, { id, promise });
      lists[w].push(this.message(id, it.url, it.params, 'low'));
    }
    const per = Math.max(1, Math.round(concurrency / this.workers.length));
    lists.forEach((list, w) => {
      if (list.length) this.workers[w].postMessage({ type: 'list', items: list, concurrency: per } satisfies FrameListMessage);
    });
  }

  /** Requests of prefetch lists not started yet are dropped (take() still gets its frame). */
  stopLists(): void {
    for (const w of this.workers) w.postMessage({ type: 'stop' } satisfies FrameStopMessage);
  }

  /** The frame's result: one started earlier (then forgotten here) or a new request. */
  take(url: string, params: PixelParams | undefined, priority: 'high' | 'low' | 'auto'): Promise<FrameResult> {
    const p = this.started.get(url);
    if (p) {
      this.started.delete(url);
      return p.promise;
    }
    return this.request(url, params, priority);
  }

  private message(id: number, url: string, params: PixelParams | undefined, priority: 'high' | 'low' | 'auto'): FrameRequestMessage {
    return {
      type: 'get',
      id,
      url,
      headers: { ...this.headers(), Accept: this.accept },
      fallbackAccept: this.fallbackAccept,
      priority,
      params,
    };
  }

  private enqueue(w: number, url: string, params: PixelParams | undefined, _priority: string): { id: number; promise: Promise<FrameResult> } {
    const id = this.nextId++;
    this.load[w]++;
    this.inFlight++;
    const promise = new Promise<FrameResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, worker: w, url, params });
    });
    return { id, promise };
  }

  private request(url: string, params: PixelParams | undefined, priority: 'high' | 'low' | 'auto'): Promise<FrameResult> {
    let w = 0;
    for (let i = 1; i < this.workers.length; i++) if (this.load[i] < this.load[w]) w = i;
    const { id, promise } = this.enqueue(w, url, params, priority);
    this.workers[w].postMessage(this.message(id, url, params, priority));
    return promise;
  }
}
