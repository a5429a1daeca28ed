// Entry: read the URL (?study=…, several for comparison; #token=… kept in memory only),
// initialise Cornerstone3D, load the series lists, start the viewer or show a clear error.

import { init as csInit } from '@cornerstonejs/core';
import { init as dicomImageLoaderInit } from '@cornerstonejs/dicom-image-loader';
import { init as toolsInit } from '@cornerstonejs/tools';
import { ViewerError, authHeaders, setToken } from './dicomweb';
import { type Key, applyI18n, getLang, setLang } from './i18n';
import { type StudyEntry, loadSeriesList, loadSeriesMetadata, patientFrom } from './study';
import { startViewer } from './viewer';
import type { BootData } from './boot';
import { installFastLoader } from './fastloader';
import { MULTIPART, SINGLE_PART } from './frames';
import './style.css';


const t0 = performance.now();

const boot: BootData = (window as any).__cfBoot ?? { token: null, studyUids: [], seriesLists: new Map() };

function showError(kind: ViewerError['kind'] | 'unknown', detail = ''): void {
  const root = document.getElementById('app')!;
  const key: Key = kind === 'unknown' ? 'err_server' : (`err_${kind}` as Key);
  const box = document.createElement('div');
  box.className = 'cf-error';
  box.setAttribute('role', 'alert');
  box.dataset.kind = kind;
  box.innerHTML = `
    <div class="cf-error-card">
      <div class="cf-error-icon">⚠</div>
      <h1 data-i18n="err_title"></h1>
      <p data-i18n="${key}"></p>
      <p class="cf-error-detail"></p>
      <div class="cf-error-actions">
        <button type="button" class="cf-retry" data-i18n="retry"></button>
        <button type="button" class="cf-lang" data-i18n="lang"></button>
      </div>
    </div>`;
  (box.querySelector('.cf-error-detail') as HTMLElement).textContent = detail;
  document.getElementById('cf-preview-holder')?.replaceChildren();
  root.replaceChildren(box);
  applyI18n(root);
  box.querySelector('.cf-retry')!.addEventListener('click', () => location.reload());
  box.querySelector('.cf-lang')!.addEventListener('click', () => setLang(getLang() === 'zh' ? 'en' : 'zh'));
  (window as any).cloudfilmViewer = { error: kind, state: () => ({ error: kind }) };
}

/** Decode workers: one per core up to 4 (`?workers=N` overrides, for measurements). */
function decodeWorkers(): number {
  const q = Number(new URLSearchParams(location.search).get('workers'));
  if (q >= 1 && q <= 8) return Math.floor(q);
  return Math.max(1, Math.min(4, navigator.hardwareConcurrency || 2));
}

async function main(): Promise<void> {
  setToken(boot.token);
  document.documentElement.lang = getLang() === 'zh' ? 'zh-CN' : 'en';
  const root = document.getElementById('app')!;
  if (!root.firstChild) {
    root.innerHTML = '<div class="cf-boot"><div class="cf-spinner"></div><span data-i18n="loading"></span></div>';
    applyI18n(root);
  }
  const uids = boot.studyUids;
  if (!uids.length) {
    showError('no_study');
    return;
  }
  performance.mark('cf:cs-init-start');
  // One WebGL context: each costs start-up time (a lot without a GPU), and four viewports
  // render fine through one shared context.
  const mobile = matchMedia('(max-width: 700px), (pointer: coarse)').matches;
  csInit({ isMobile: mobile, rendering: { webGlContextCount: 1 } } as any);
  dicomImageLoaderInit({
    maxWebWorkers: decodeWorkers(),
    // Frames: single-part first (no multipart boundary to search in every 512 kB frame), the
    // standard multipart as the alternative a server may prefer; both "as stored".
    beforeSend: (_xhr: unknown, _imageId: string, defaults: Record<string, string>) => {
      const accept = defaults?.Accept ?? '';
      if (boot.singlePart && accept.startsWith('multipart/related') && accept.includes('application/octet-stream')) {
        return { ...authHeaders(), Accept: `${SINGLE_PART}, ${MULTIPART}` };
      }
      return authHeaders();
    },
  } as any);
  // Frames through the frame workers started by boot.ts (native frames need no decode worker).
  if (!boot.frames && new URLSearchParams(location.search).get('fworkers') !== '0') {
    installFastLoader(undefined, authHeaders, 1);
  } else if (boot.frames) {
    installFastLoader(boot.frames, authHeaders, 1);
  }
  toolsInit();
  performance.mark('cf:cs-init-done');
  let studies: StudyEntry[];
  try {
    studies = await Promise.all(uids.map((uid, i) => loadSeriesList(uid, i)));
    // Patient and study details from the first series' metadata (one request, needed anyway).
    await Promise.all(
      studies.map(async (st) => {
        await loadSeriesMetadata(st.series[0]);
        st.patient = patientFrom(st.series[0].instances[0]);
      }),
    );
  } catch (e) {
    console.error(e);
    if (e instanceof ViewerError) showError(e.kind, e.kind === 'server' ? e.message : '');
    else showError('unknown', String(e));
    return;
  }
  await startViewer(root, studies, t0);
}

void main().catch((e) => {
  console.error(e);
  showError('unknown', String(e));
});
