// Inlined into index.html by the build (vite.config.ts), so the first requests leave while the
// HTML is still being parsed, without waiting for any script file: the token is taken out of
// the URL fragment, the series list of each study is asked for, then the first series'
// metadata, then the frame shown first. boot.ts (a module file, loaded meanwhile) draws it.
// Self-contained: no imports, no exports; it leaves its promises in `window.__cfStart`.

interface Json {
  [tag: string]: { vr?: string; Value?: any[] };
}

(() => {
  const v = (ds: Json | undefined, tag: string, i = 0): any => ds?.[tag]?.Value?.[i];
  const hash = new URLSearchParams(location.hash.replace(/^#/, ''));
  const token = hash.get('token');
  if (token) {
    // Out of the address bar and history: the token lives in memory only.
    hash.delete('token');
    const rest = hash.toString();
    history.replaceState(history.state, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
  }
  const q = new URLSearchParams(location.search);
  const studyUids = [
    ...new Set(
      [...q.getAll('study'), ...q.getAll('StudyInstanceUID')].flatMap((s) => s.split(',').map((x) => x.trim())).filter(Boolean),
    ),
  ];
  const wado = q.get('wadoRoot');
  // Only same-origin roots: a query parameter must never send the token elsewhere.
  const root = wado && wado.startsWith('/') && !wado.startsWith('//') ? `${location.origin}${wado.replace(/\/$/, '')}` : `${location.origin}/dicom-web`;
  const init = (accept: string, priority = 'auto'): RequestInit =>
    ({
      headers: token ? { Accept: accept, Authorization: `Bearer ${token}` } : { Accept: accept },
      credentials: 'same-origin',
      priority,
    }) as RequestInit;
  const seriesLists = new Map<string, Promise<Response>>();
  for (const uid of studyUids) {
    const p = fetch(`${root}/studies/${encodeURIComponent(uid)}/series?includefield=0008103E&includefield=00201209`, init('application/dicom+json', 'high'));
    p.catch(() => undefined); // the viewer reports a network error
    seriesLists.set(uid, p);
  }

  /** Image instances in the viewer's display order (study.ts has the same rule). */
  const displayOrder = (list: Json[]): Json[] => {
    const imgs = list.filter((ds) => v(ds, '00280010'));
    const iop: number[] | undefined = imgs[0]?.['00200037']?.Value?.map(Number);
    if (iop && iop.length === 6) {
      const n = [iop[1] * iop[5] - iop[2] * iop[4], iop[2] * iop[3] - iop[0] * iop[5], iop[0] * iop[4] - iop[1] * iop[3]];
      const keys = new Map<Json, number>();
      const parallel = imgs.every((ds) => {
        const o = ds['00200037']?.Value?.map(Number);
        const p = ds['00200032']?.Value?.map(Number);
        if (!o || !p || p.length !== 3 || !o.every((x: number, i: number) => Math.abs(x - iop[i]) < 1e-3)) return false;
        keys.set(ds, p[0] * n[0] + p[1] * n[1] + p[2] * n[2]);
        return true;
      });
      if (parallel) {
        imgs.sort((a, b) => keys.get(a)! - keys.get(b)!);
        if (Math.abs(n[2]) > 0.5) imgs.reverse();
        return imgs;
      }
    }
    return imgs.sort((a, b) => Number(v(a, '00200013') ?? 0) - Number(v(b, '00200013') ?? 0));
  };

  const firstMetadata = (async () => {
    const studyUID = studyUids[0];
    const res = await seriesLists.get(studyUID)!;
    if (!res.ok) return null;
    const rows: Json[] = await res.clone().json();
    const images = rows
      .filter((r) => !['SR', 'PR', 'KO', 'DOC', 'RTSTRUCT', 'SEG', 'REG', 'RWV'].includes(v(r, '00080060') ?? ''))
      .sort((a, b) => Number(v(a, '00200011') ?? 0) - Number(v(b, '00200011') ?? 0));
    if (!images.length) return null;
    const seriesUID = v(images[0], '0020000E');
    const meta = await fetch(`${root}/studies/${studyUID}/series/${seriesUID}/metadata`, init('application/dicom+json', 'high'));
    if (!meta.ok) return null;
    const metadata: Json[] = await meta.json();
    performance.mark('cf:metadata');
    const ordered = displayOrder(metadata);
    // The slice shown first: the middle one, or the first frame of a multi-frame image.
    const first = ordered.length && Number(v(ordered[0], '00280008') ?? 1) > 1 ? 0 : Math.floor((ordered.length - 1) / 2);
    return { studyUID, seriesUID, metadata, ordered, first };
  })().catch(() => null);

  // That frame: single-part first (no boundary to search), the standard multipart as the
  // alternative; a server that refuses the pair (Orthanc answers 400) gets multipart alone.
  const single = 'application/octet-stream; transfer-syntax=*';
  const multi = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';
  const previewFrame = firstMetadata.then(async (m) => {
    const ds = m?.ordered[m.first];
    if (!m || !ds) return null;
    const url = `${root}/studies/${m.studyUID}/series/${m.seriesUID}/instances/${v(ds, '00080018')}/frames/1`;
    performance.mark('cf:preview-request');
    let res = await fetch(url, init(`${single}, ${multi}`, 'high'));
    if (res.status === 400 || res.status === 406) res = await fetch(url, init(multi, 'high'));
    return { url, ds, res };
  }).catch(() => null);

  (window as any).__cfStart = { token, studyUids, root, seriesLists, firstMetadata, previewFrame };
})();
