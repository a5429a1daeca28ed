// Viewports: the grid cells, the layout, showing a series in a stack viewport.

import { Enums, utilities, type Types } from '@cornerstonejs/core';
import * as csTools from '@cornerstonejs/tools';
import { TAG, type DicomJson, value } from './dicomweb';
import { applyI18n, t } from './i18n';
import { refresh, setFocus } from './loader';
import { isNetworkError } from './network';
import { type SeriesEntry, loadSeriesMetadata } from './study';
import { startCine, stopCine } from './actions';
import { updateOverlay } from './overlay';
import { markActiveThumbs } from './seriesPanel';
import { h } from './shell';
import { showStatus } from './status';
import { addToSynchronizers } from './tools';
import { attachTouch } from './touch';
import {
  ENGINE_ID,
  LAYOUTS,
  type LayoutName,
  MPR_GROUP,
  STACK_GROUP,
  type Slot,
  VR_GROUP,
  engine,
  firstImageResolve,
  grid,
  sliceSync,
  state,
  voiSync,
  zoomSync,
} from './viewerState';

const { ToolGroupManager, ReferenceLinesTool } = csTools;

export function makeCell(index: number): Slot {
  const element = h('div', { class: 'cf-vp' }) as HTMLDivElement;
  element.oncontextmenu = (e) => e.preventDefault();
  const ov = (pos: string) => h('div', { class: `cf-ov cf-ov-${pos}` }) as HTMLDivElement;
  const or = (pos: string) => h('div', { class: `cf-or cf-or-${pos}` }) as HTMLDivElement;
  const overlay = { tl: ov('tl'), tr: ov('tr'), bl: ov('bl'), br: ov('br') };
  const orient = { top: or('top'), bottom: or('bottom'), left: or('left'), right: or('right') };
  const slider = h('input', { type: 'range', class: 'cf-slider', min: '0', max: '0', value: '0', step: '1' });
  const progress = h('div', { class: 'cf-vp-progress' }) as HTMLDivElement;
  const hint = h('div', { class: 'cf-hint', 'data-i18n': 'drop_here' });
  const cell = h('div', { class: 'cf-cell', 'data-index': String(index) }, [
    element,
    ...Object.values(overlay),
    ...Object.values(orient),
    slider,
    progress,
    hint,
  ]) as HTMLDivElement;
  const slot: Slot = {
    index,
    viewportId: `vp${index}`,
    cell,
    element,
    overlay,
    orient,
    slider,
    progress,
    kind: 'empty',
  };
  cell.addEventListener('pointerdown', () => setActive(index), true);
  cell.addEventListener('dragover', (e) => {
    e.preventDefault();
    cell.classList.add('cf-drop');
  });
  cell.addEventListener('dragleave', () => cell.classList.remove('cf-drop'));
  cell.addEventListener('drop', (e) => {
    e.preventDefault();
    cell.classList.remove('cf-drop');
    const key = e.dataTransfer?.getData('text/x-cloudfilm-series');
    const s = state.allSeries.find((x) => x.key === key);
    if (s) void showSeries(index, s);
  });
  slider.addEventListener('input', () => {
    const vp = stackViewport(slot);
    if (vp) void vp.setImageIdIndex(Number(slider.value));
  });
  attachTouch(slot);
  return slot;
}

export function stackViewport(slot: Slot | undefined): Types.IStackViewport | undefined {
  if (!slot || slot.kind !== 'stack') return undefined;
  return engine.getViewport(slot.viewportId) as Types.IStackViewport | undefined;
}

export function anyViewport(slot: Slot | undefined): Types.IViewport | undefined {
  if (!slot || slot.kind === 'empty') return undefined;
  return engine.getViewport(slot.viewportId);
}

export function setActive(index: number): void {
  if (state.active === index) return;
  state.active = index;
  state.slots.forEach((s) => s.cell.classList.toggle('cf-active', s.index === index));
  const slot = state.slots[index];
  const vp = stackViewport(slot);
  if (slot?.series && vp) setFocus(slot.series, vp.getCurrentImageIdIndex());
  if (state.refLines && slot?.kind === 'stack') {
    const tg = ToolGroupManager.getToolGroup(STACK_GROUP);
    tg?.setToolConfiguration(ReferenceLinesTool.toolName, { sourceViewportId: slot.viewportId });
    engine.render();
  }
}

export function disableAll(): void {
  stopCine();
  for (const slot of state.slots) {
    if (slot.kind !== 'empty') {
      for (const id of [STACK_GROUP, MPR_GROUP, VR_GROUP]) {
        ToolGroupManager.getToolGroup(id)?.removeViewports(ENGINE_ID, slot.viewportId);
      }
      engine.disableElement(slot.viewportId);
    }
  }
  for (const sync of [sliceSync, voiSync, zoomSync]) {
    sync?.getSourceViewports().forEach((v: any) => sync.remove(v));
  }
  state.slots = [];
}

export function setLayout(name: LayoutName, keep = true): void {
  const previous = state.mode === 'stack' ? state.slots.map((s) => s.series) : [];
  disableAll();
  state.mode = 'stack';
  state.layout = name;
  const [rows, cols] = LAYOUTS[name];
  grid.className = `cf-grid layout-${name}`;
  grid.style.gridTemplateRows = `repeat(${rows}, minmax(0, 1fr))`;
  grid.style.gridTemplateColumns = `repeat(${cols}, minmax(0, 1fr))`;
  grid.replaceChildren();
  const n = rows * cols;
  for (let i = 0; i < n; i++) {
    const slot = makeCell(i);
    state.slots.push(slot);
    grid.append(slot.cell);
  }
  applyI18n(grid);
  state.active = Math.min(state.active, n - 1);
  state.slots.forEach((s) => s.cell.classList.toggle('cf-active', s.index === state.active));
  document.querySelectorAll<HTMLElement>('[data-layout]').forEach((b) => b.classList.toggle('on', b.dataset.layout === name));
  document.body.classList.remove('cf-mpr-mode');
  // Fill: keep what was shown, then the next unseen series (for a comparison, the first series
  // of each study side by side).
  const wanted: SeriesEntry[] = [];
  if (keep) previous.forEach((s) => s && wanted.length < n && wanted.push(s));
  const firstOfStudies = state.studies.map((st) => st.series[0]);
  for (const s of [...(state.studies.length > 1 ? firstOfStudies : []), ...state.allSeries]) {
    if (wanted.length >= n) break;
    if (!wanted.includes(s)) wanted.push(s);
  }
  wanted.forEach((s, i) => void showSeries(i, s));
}

export async function showSeries(index: number, series: SeriesEntry): Promise<void> {
  if (state.mode !== 'stack') setLayout(state.layout, true);
  const slot = state.slots[index];
  if (!slot) return;
  slot.series = series;
  slot.cell.classList.add('cf-has-series');
  markActiveThumbs();
  await loadSeriesMetadata(series);
  if (slot.series !== series) return;
  for (const id of series.imageIds) state.byImageId.set(id, series);
  if (slot.kind !== 'stack') {
    engine.enableElement({
      viewportId: slot.viewportId,
      element: slot.element,
      type: Enums.ViewportType.STACK,
      defaultOptions: { background: [0, 0, 0] as Types.Point3 },
    });
    slot.kind = 'stack';
    ToolGroupManager.getToolGroup(STACK_GROUP)?.addViewport(slot.viewportId, ENGINE_ID);
    addToSynchronizers(slot);
    installViewportListeners(slot);
  }
  const vp = stackViewport(slot)!;
  const start = series.multiframe ? 0 : Math.floor((series.imageIds.length - 1) / 2);
  slot.slider.max = String(Math.max(0, series.imageIds.length - 1));
  slot.slider.value = String(start);
  slot.cell.classList.toggle('cf-single', series.imageIds.length <= 1);
  if (index === state.active) setFocus(series, start);
  refresh();
  try {
    await vp.setStack(series.imageIds, start);
  } catch (e) {
    console.error('setStack failed', e);
    showStatus(() => t(isNetworkError(e) ? 'err_network' : 'err_image'));
  }
  applyInitialVoi(slot);
  vp.render();
  updateOverlay(slot);
  if (series.multiframe && state.slots.length === 1) startCine(series.fps ?? 15);
}

export function applyInitialVoi(slot: Slot): void {
  const vp = stackViewport(slot);
  const ds = currentMeta(slot);
  if (!vp || !ds) return;
  const wc = Number(value(ds, TAG.WindowCenter));
  const ww = Number(value(ds, TAG.WindowWidth));
  if (Number.isFinite(wc) && Number.isFinite(ww) && ww > 0 && !isColor(ds)) {
    vp.setProperties({ voiRange: utilities.windowLevel.toLowHighRange(ww, wc) });
  }
}

function isColor(ds: DicomJson): boolean {
  const pi = String(value(ds, TAG.PhotometricInterpretation) ?? '');
  return !pi.startsWith('MONOCHROME');
}

export function currentMeta(slot: Slot): DicomJson | undefined {
  const vp = stackViewport(slot);
  if (!vp || !slot.series) return undefined;
  return slot.series.metaByImageId.get(vp.getCurrentImageId());
}

function installViewportListeners(slot: Slot): void {
  const el = slot.element;
  const upd = () => updateOverlay(slot);
  el.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => {
    const vp = stackViewport(slot);
    if (vp) {
      const i = vp.getCurrentImageIdIndex();
      slot.slider.value = String(i);
      if (slot.series && slot.index === state.active) setFocus(slot.series, i);
    }
    upd();
  });
  el.addEventListener(Enums.Events.VOI_MODIFIED, upd);
  el.addEventListener(Enums.Events.CAMERA_MODIFIED, upd);
  el.addEventListener(Enums.Events.IMAGE_RENDERED, () => {
    if (state.firstImageAt === null && slot.kind === 'stack') {
      const vp = stackViewport(slot);
      if (vp && vp.getCornerstoneImage()) {
        state.firstImageAt = performance.now();
        const boot = (window as any).__cfBoot;
        if (boot) {
          boot.preview?.remove();
          boot.preview = null;
          document.getElementById('cf-preview-holder')?.remove();
        }
        document.body.dataset.firstImage = String(Math.round(state.firstImageAt));
        firstImageResolve(state.firstImageAt);
      }
    }
    upd();
  });
}
