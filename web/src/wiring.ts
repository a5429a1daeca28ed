// Wiring: toolbar, preset and cine inputs, language, keyboard, resize, load events.

import { Enums, eventTarget } from '@cornerstonejs/core';
import { getLang, onLangChange, setLang, t } from './i18n';
import { markLoaded, onSeriesLoaded } from './loader';
import { isNetworkError, noAnswer, onNetworkChange, reportNetworkFailure } from './network';
import { action, applyPreset } from './actions';
import { onKey } from './keyboard';
import { updateOverlay } from './overlay';
import { keepShownSlice, renderStatus, showStatus } from './status';
import { applyToggles, setPrimary } from './tools';
import { setLayout } from './viewports';
import { type LayoutName, engine, grid, state } from './viewerState';

export function wireUi(): void {
  document.getElementById('cf-toolbar')!.addEventListener('click', (e) => {
    const b = (e.target as HTMLElement).closest('button') as HTMLButtonElement | null;
    if (!b) return;
    if (b.dataset.tool) setPrimary(b.dataset.tool);
    else if (b.dataset.action) action(b.dataset.action);
    else if (b.dataset.layout) setLayout(b.dataset.layout as LayoutName);
    else if (b.dataset.toggle) {
      (state as any)[b.dataset.toggle] = !(state as any)[b.dataset.toggle];
      applyToggles();
    }
    if (window.matchMedia('(max-width: 700px)').matches && !b.dataset.toggle) {
      document.body.classList.remove('cf-drawer-open');
    }
  });
  const sel = document.getElementById('cf-preset') as HTMLSelectElement;
  sel.addEventListener('change', () => {
    if (sel.value) applyPreset(sel.value);
    sel.value = '';
  });
  const fps = document.getElementById('cf-fps') as HTMLInputElement;
  fps.addEventListener('change', () => {
    const v = Math.max(1, Math.min(60, Number(fps.value) || 10));
    state.cine.fps = v;
  });
  document.getElementById('cf-lang')!.addEventListener('click', () => setLang(getLang() === 'zh' ? 'en' : 'zh'));
  document.getElementById('cf-drawer')!.addEventListener('click', () => document.body.classList.toggle('cf-drawer-open'));
  document.getElementById('cf-touch-wl')!.addEventListener('click', () => {
    state.touchMode = state.touchMode === 'wl' ? 'scroll' : 'wl';
    if (state.touchMode === 'wl') setPrimary('wl');
    document.getElementById('cf-touch-wl')!.classList.toggle('on', state.touchMode === 'wl');
  });
  window.addEventListener('keydown', onKey);
  const ro = new ResizeObserver(() => {
    engine.resize(true, true);
    state.slots.forEach(updateOverlay);
  });
  ro.observe(grid);
  eventTarget.addEventListener(Enums.Events.IMAGE_LOADED, (e: any) => {
    const id = e.detail?.image?.imageId;
    const s = id && state.byImageId.get(id);
    if (s) markLoaded(s, id, true);
  });
  eventTarget.addEventListener(Enums.Events.IMAGE_LOAD_FAILED, (e: any) => {
    const id = e.detail?.imageId;
    const s = id && state.byImageId.get(id);
    const network = isNetworkError(e.detail?.error);
    if (s) markLoaded(s, id, false, network);
    if (id) keepShownSlice(id);
    if (network) {
      // The status line says so for as long as it lasts (onNetworkChange).
      reportNetworkFailure();
      return;
    }
    state.decodeErrors++;
    showStatus(() => t('err_image'));
  });
  onNetworkChange(renderStatus);
  onLangChange(renderStatus);
  // Cornerstone's cache keeps a promise of every load and rethrows its failure where nobody
  // listens: a frame that got no answer is reported above (status line), not an uncaught error.
  window.addEventListener('unhandledrejection', (e) => {
    if (noAnswer(e.reason)) {
      e.preventDefault();
      reportNetworkFailure();
    }
  });
  renderStatus();
  onSeriesLoaded(() => state.slots.forEach(updateOverlay));
}
