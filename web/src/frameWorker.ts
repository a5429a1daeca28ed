// A frame worker (see frames.ts): fetch one WADO-RS frame, take its first part, and for native
// greyscale frames apply the modality LUT; the buffer goes back to the main thread without a copy.

import {
  type FrameReplyMessage,
  type FrameRequestMessage,
  type FrameResult,
  type FrameWorkerMessage,
  NATIVE_SYNTAXES,
  firstPart,
  processNative,
  transferSyntaxOf,
} from './frames';

const scope = self as unknown as {
  postMessage(message: FrameReplyMessage, transfer?: Transferable[]): void;
  onmessage: ((e: MessageEvent<FrameWorkerMessage>) => void) | null;
};

async function handle(msg: FrameRequestMessage): Promise<void> {
  const init = (accept: string): RequestInit =>
    ({ headers: { ...msg.headers, Accept: accept }, credentials: 'same-origin', priority: msg.priority }) as RequestInit;
  let usedFallback = false;
  let res: Response;
  try {
    res = await fetch(msg.url, init(msg.headers.Accept));
    if ((res.status === 400 || res.status === 406) && msg.fallbackAccept) {
      usedFallback = true;
      res = await fetch(msg.url, init(msg.fallbackAccept));
    }
  } catch (e) {
    // fetch rejects only when no answer came (network down, server unreachable).
    scope.postMessage({ id: msg.id, ok: false, status: 0, message: String(e), network: true } satisfies FrameReplyMessage);
    return;
  }
  if (!res.ok) {
    scope.postMessage({ id: msg.id, ok: false, status: res.status, message: `${res.status} ${msg.url}` } satisfies FrameReplyMessage);
    return;
  }
  const contentType = res.headers.get('content-type') ?? 'application/octet-stream';
  const t0 = performance.now();
  const body = new Uint8Array(await res.arrayBuffer());
  const t1 = performance.now();
  const part = firstPart(body, contentType);
  if (!part || !part.data.length) {
    scope.postMessage({ id: msg.id, ok: false, status: 0, message: `no frame in the response ${msg.url}` } satisfies FrameReplyMessage);
    return;
  }
  const transferSyntax = transferSyntaxOf(part.type);
  let result: FrameResult | null = null;
  if (msg.params && NATIVE_SYNTAXES.has(transferSyntax)) {
    result = processNative(part.data, msg.params);
    if (result) result.transferSyntax = transferSyntax;
  }
  result ??= { kind: 'raw', transferSyntax, contentType: part.type, bytes: part.data };
  const timing: [number, number] = [t1 - t0, performance.now() - t1];
  const buffer = result.kind === 'native' ? result.pixels.buffer : result.bytes.buffer;
  scope.postMessage({ id: msg.id, ok: true, result, usedFallback, timing } satisfies FrameReplyMessage, [buffer as ArrayBuffer]);
}

function run(msg: FrameRequestMessage): Promise<void> {
  // A TypeError here is the body failing to arrive (connection lost mid-response).
  return handle(msg).catch((err) =>
    scope.postMessage({ id: msg.id, ok: false, status: 0, message: String(err), network: err instanceof TypeError } satisfies FrameReplyMessage),
  );
}

// A prefetch list: fetched here, `concurrency` at a time, whatever the main thread is doing.
let queue: FrameRequestMessage[] = [];
let active = 0;
let concurrency = 4;

function pump(): void {
  while (active < concurrency && queue.length) {
    const msg = queue.shift()!;
    active++;
    void run(msg).finally(() => {
      active--;
      pump();
    });
  }
}

scope.onmessage = (e: MessageEvent<FrameWorkerMessage>) => {
  const msg = e.data;
  if (msg.type === 'get') void run(msg);
  else if (msg.type === 'list') {
    queue = queue.concat(msg.items);
    concurrency = msg.concurrency;
    pump();
  } else if (msg.type === 'stop') {
    for (const m of queue) {
      scope.postMessage({ id: m.id, ok: false, status: 0, message: 'cancelled', cancelled: true } satisfies FrameReplyMessage);
    }
    queue = [];
  }
};
