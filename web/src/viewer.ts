// The viewer: layout, viewports, tools, overlays, synchronisers, MPR/3D, cine, export, touch.

import {
  Enums,
  RenderingEngine,
  cache,
  eventTarget,
  getRenderingEngine,
  metaData,
  setVolumesForViewports,
  utilities,
  volumeLoader,
  type Types,
} from '@cornerstonejs/core';
import * as csTools from '@cornerstonejs/tools';
import { TAG, type DicomJson, numbers, value } from './dicomweb';
import { type Key, applyI18n, getLang, onLangChange, setLang, t } from './i18n';
import { markLoaded, onSeriesLoaded, refresh, setFocus, setOrder, startPrefetch } from './loader';
import { isNetworkError, networkDown, noAnswer, onNetworkChange, reportNetworkFailure } from './network';
import { type SeriesEntry, type StudyEntry, loadSeriesMetadata, loadThumbnail } from './study';

const {
  ToolGroupManager,
  Enums: ToolEnums,
  WindowLevelTool,
  PanTool,
  ZoomTool,
  StackScrollTool,
  LengthTool,
  AngleTool,
  RectangleROITool,
  EllipticalROITool,
  ProbeTool,
  MagnifyTool,
  ReferenceLinesTool,
  CrosshairsTool,
  TrackballRotateTool,
  synchronizers,
  annotation,
} = csTools;
const { MouseBindings } = ToolEnums;

/**
 * ProbeTool of @cornerstonejs/tools 5.14 reads a stack image's value at slice index k of a
 * one-slice voxel manager, which gives undefined on any slice but the first. Read the value from
 * the image itself (pre-scaled by the loader: HU for CT).
 */
class StackProbeTool extends (ProbeTool as any) {
  static toolName = ProbeTool.toolName;

  _calculateCachedStats(annotation: any, ...rest: any[]): any {
    const out = super._calculateCachedStats(annotation, ...rest);
    const stats = annotation.data.cachedStats ?? {};
    for (const [targetId, st] of Object.entries<any>(stats)) {
      if (!st || (st.value !== undefined && st.value !== null) || !st.index || !targetId.startsWith('imageId:')) continue;
      const image: any = cache.getImage(targetId.slice('imageId:'.length));
      if (!image) continue;
      const [i, j] = st.index;
      if (i < 0 || j < 0 || i >= image.columns || j >= image.rows) continue;
      const data = image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
      const spp = image.color ? (image.numberOfComponents ?? 3) : 1;
      let v = data[(j * image.columns + i) * spp];
      if (!image.preScale?.scaled && !image.color) v = v * (image.slope ?? 1) + (image.intercept ?? 0);
      st.value = v;
    }
    return out;
  }
}

const ENGINE_ID = 'cloudfilm';
const STACK_GROUP = 'cf-stack';
const MPR_GROUP = 'cf-mpr';
const VR_GROUP = 'cf-vr';

type LayoutName = '1x1' | '1x2' | '2x1' | '2x2';
const LAYOUTS: Record<LayoutName, [number, number]> = { '1x1': [1, 1], '1x2': [1, 2], '2x1': [2, 1], '2x2': [2, 2] };

export const PRESETS: Record<string, { wc: number; ww: number }> = {
  lung: { wc: -600, ww: 1500 },
  mediastinum: { wc: 40, ww: 350 },
  bone: { wc: 400, ww: 1800 },
  brain: { wc: 40, ww: 80 },
  abdomen: { wc: 50, ww: 400 },
};

const PRIMARY_TOOLS: Record<string, { tool: string; label: Key; key: string; icon: string }> = {
  wl: { tool: WindowLevelTool.toolName, label: 'wl', key: 'w', icon: '◐' },
  zoom: { tool: ZoomTool.toolName, label: 'zoom', key: 'z', icon: '⊕' },
  pan: { tool: PanTool.toolName, label: 'pan', key: 'p', icon: '✥' },
  scroll: { tool: StackScrollTool.toolName, label: 'scroll', key: 's', icon: '⇕' },
  magnify: { tool: MagnifyTool.toolName, label: 'magnify', key: 'm', icon: '⌕' },
  length: { tool: LengthTool.toolName, label: 'length', key: 'l', icon: '↔' },
  angle: { tool: AngleTool.toolName, label: 'angle', key: 'a', icon: '∠' },
  rect: { tool: RectangleROITool.toolName, label: 'rect', key: 'r', icon: '▭' },
  ellipse: { tool: EllipticalROITool.toolName, label: 'ellipse', key: 'e', icon: '◯' },
  probe: { tool: ProbeTool.toolName, label: 'probe', key: 'u', icon: '⊹' },
};
const ANNOTATION_TOOLS = [
  LengthTool.toolName,
  AngleTool.toolName,
  RectangleROITool.toolName,
  EllipticalROITool.toolName,
  ProbeTool.toolName,
];

interface Slot {
  index: number;
  viewportId: string;
  cell: HTMLDivElement;
  element: HTMLDivElement;
  overlay: Record<'tl' | 'tr' | 'bl' | 'br', HTMLDivElement>;
  orient: Record<'top' | 'bottom' | 'left' | 'right', HTMLDivElement>;
  slider: HTMLInputElement;
  progress: HTMLDivElement;
  series?: SeriesEntry;
  kind: 'stack' | 'mpr' | 'vr' | 'empty';
  orientation?: 'axial' | 'sagittal' | 'coronal';
}

interface State {
  studies: StudyEntry[];
  allSeries: SeriesEntry[];
  byImageId: Map<string, SeriesEntry>;
  slots: Slot[];
  active: number;
  layout: LayoutName;
  mode: 'stack' | 'mpr';
  mprSeries?: SeriesEntry;
  mip: boolean;
  vr: boolean;
  primary: string;
  touchMode: 'scroll' | 'wl' | 'tool';
  syncScroll: boolean;
  syncWL: boolean;
  syncZoom: boolean;
  refLines: boolean;
  cine: { timer: number | null; fps: number };
  firstImageAt: number | null;
  decodeErrors: number;
}

const state: State = {
  studies: [],
  allSeries: [],
  byImageId: new Map(),
  slots: [],
  active: 0,
  layout: '1x1',
  mode: 'stack',
  mip: false,
  vr: false,
  primary: 'wl',
  touchMode: 'scroll',
  syncScroll: true,
  syncWL: false,
  syncZoom: false,
  refLines: true,
  cine: { timer: null, fps: 10 },
  firstImageAt: null,
  decodeErrors: 0,
};

let engine: RenderingEngine;
let grid: HTMLDivElement;
let seriesPanel: HTMLDivElement;
let sliceSync: any;
let voiSync: any;
let zoomSync: any;
let firstImageResolve: (v: number) => void;
const firstImage = new Promise<number>((r) => (firstImageResolve = r));
/** Background work (prefetch, thumbnails) starts when the first image is up, or after 2 s. */
const settled = Promise.race([firstImage, new Promise((r) => setTimeout(r, 2000))]);

// ---------------------------------------------------------------------------------------------
// DOM

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  children: Array<Node | string> = [],
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') el.className = v;
    else el.setAttribute(k, v);
  }
  for (const c of children) el.append(c);
  return el;
}

function button(attrs: Record<string, string>, label: Key, icon?: string): HTMLButtonElement {
  const b = h('button', { type: 'button', 'data-i18n-title': label, ...attrs });
  if (icon) b.append(h('span', { class: 'ic', 'aria-hidden': 'true' }, [icon]));
  b.append(h('span', { class: 'lb', 'data-i18n': label }));
  return b;
}

function buildShell(root: HTMLElement): void {
  const tools = h('div', { class: 'cf-group', role: 'toolbar' });
  for (const [name, def] of Object.entries(PRIMARY_TOOLS)) {
    tools.append(button({ 'data-tool': name, 'data-key': def.key.toUpperCase() }, def.label, def.icon));
  }
  const presetSel = h('select', { id: 'cf-preset', 'data-i18n-title': 'presets' });
  const actions = h('div', { class: 'cf-group' }, [
    presetSel,
    button({ 'data-action': 'invert', 'data-key': 'I' }, 'invert', '◑'),
    button({ 'data-action': 'rotate', 'data-key': 'O' }, 'rotate', '↻'),
    button({ 'data-action': 'flipH', 'data-key': 'H' }, 'flipH', '⇆'),
    button({ 'data-action': 'flipV', 'data-key': 'V' }, 'flipV', '⇅'),
    button({ 'data-action': 'reset', 'data-key': '0' }, 'reset', '⟲'),
    button({ 'data-action': 'deleteSel', 'data-key': 'Del' }, 'deleteSel', '⌫'),
    button({ 'data-action': 'clear' }, 'clear', '✕'),
  ]);
  const cine = h('div', { class: 'cf-group cf-cine' }, [
    button({ 'data-action': 'cine', 'data-key': 'Space' }, 'cine', '▶'),
    h('input', { type: 'number', id: 'cf-fps', min: '1', max: '60', value: String(state.cine.fps), 'data-i18n-title': 'fps' }),
    h('span', { 'data-i18n': 'fps', class: 'cf-fps-label' }),
  ]);
  const layouts = h('div', { class: 'cf-group cf-layouts' });
  for (const name of Object.keys(LAYOUTS)) {
    const b = h('button', { type: 'button', 'data-layout': name, title: name }, [name.replace('x', '×')]);
    layouts.append(b);
  }
  const sync = h('div', { class: 'cf-group cf-sync' }, [
    button({ 'data-toggle': 'syncScroll' }, 'sync', '⇳'),
    button({ 'data-toggle': 'syncWL' }, 'syncWL', '◐⇄'),
    button({ 'data-toggle': 'syncZoom' }, 'syncZoom', '⤢'),
    button({ 'data-toggle': 'refLines' }, 'refLines', '┼'),
  ]);
  const three = h('div', { class: 'cf-group' }, [
    button({ 'data-action': 'mpr' }, 'mpr', '⊞'),
    button({ 'data-action': 'mip' }, 'mip', '☰'),
    button({ 'data-action': 'vr' }, 'vr', '⬢'),
    button({ 'data-action': 'export' }, 'export', '⇩'),
  ]);
  const toolbar = h('nav', { class: 'cf-toolbar', id: 'cf-toolbar' }, [tools, actions, cine, layouts, sync, three]);
  const langBtn = h('button', { type: 'button', id: 'cf-lang', class: 'cf-lang', 'data-i18n': 'lang' });
  const drawerBtn = h('button', { type: 'button', id: 'cf-drawer', class: 'cf-drawer-btn', 'data-i18n-title': 'tools' }, ['☰']);
  const wlMode = h('button', { type: 'button', id: 'cf-touch-wl', class: 'cf-phone-only', 'data-i18n-title': 'wl' }, ['◐']);
  const header = h('header', { class: 'cf-top' }, [
    drawerBtn,
    h('div', { class: 'cf-brand' }, [h('span', { 'data-i18n': 'title' })]),
    wlMode,
    toolbar,
    langBtn,
  ]);
  seriesPanel = h('aside', { class: 'cf-series', id: 'cf-series' }) as unknown as HTMLDivElement;
  grid = h('section', { class: 'cf-grid layout-1x1', id: 'cf-grid' }) as unknown as HTMLDivElement;
  const main = h('div', { class: 'cf-main' }, [seriesPanel, grid]);
  const status = h('div', { class: 'cf-status', id: 'cf-status' });
  root.replaceChildren(h('div', { class: 'cf-app', id: 'cf-app' }, [header, main, status]));
  applyI18n(root);
  fillPresets();
  onLangChange(() => {
    fillPresets();
    renderSeriesPanel();
    state.slots.forEach(updateOverlay);
  });
}

function fillPresets(): void {
  const sel = document.getElementById('cf-preset') as HTMLSelectElement;
  const current = sel.value;
  sel.replaceChildren(
    h('option', { value: '' }, [`${t('presets')}…`]),
    h('option', { value: 'default' }, [t('preset_default')]),
    ...Object.keys(PRESETS).map((k) => {
      const p = PRESETS[k];
      return h('option', { value: k }, [`${t(`preset_${k}` as Key)} (${p.ww}/${p.wc})`]);
    }),
  );
  sel.value = current;
}

// ---------------------------------------------------------------------------------------------
// Series panel

function renderSeriesPanel(): void {
  seriesPanel.replaceChildren();
  for (const study of state.studies) {
    if (state.studies.length > 1) {
      seriesPanel.append(
        h('div', { class: 'cf-study-head' }, [`${study.patient.studyDate} ${study.patient.studyDescription}`]),
      );
    }
    for (const s of study.series) {
      const img = h('img', { alt: '', draggable: 'false' });
      if (s.thumbUrl) img.src = s.thumbUrl;
      const bar = h('div', { class: 'cf-bar' }, [h('div', { class: 'cf-bar-fill' })]);
      const count = h('div', { class: 'cf-count' });
      const card = h('div', { class: 'cf-thumb', draggable: 'true', 'data-series': s.seriesUID, tabindex: '0' }, [
        h('div', { class: 'cf-thumb-img' }, [img, h('span', { class: 'cf-mod' }, [s.modality])]),
        h('div', { class: 'cf-thumb-text' }, [
          h('div', { class: 'cf-thumb-desc' }, [`${t('se')} ${s.number} ${s.description}`]),
          count,
          bar,
        ]),
      ]);
      const update = () => {
        const total = s.imageIds.length || s.expectedInstances;
        const done = s.loadedIds.size;
        (bar.firstChild as HTMLElement).style.width = total ? `${(100 * done) / total}%` : '0';
        count.textContent = `${done}/${total} ${t('images')}`;
        card.classList.toggle('cf-done', total > 0 && done >= total);
        card.dataset.loaded = String(done);
        card.dataset.total = String(total);
      };
      s.onProgress = [update];
      update();
      card.addEventListener('dragstart', (e) => {
        e.dataTransfer?.setData('text/x-cloudfilm-series', s.key);
      });
      card.addEventListener('click', () => void showSeries(state.active, s));
      card.addEventListener('keydown', (e) => {
        if (e.key === 'Enter') void showSeries(state.active, s);
      });
      seriesPanel.append(card);
      if (!s.thumbUrl) {
        void settled.then(() => loadThumbnail(s)).then((url) => {
          if (url) img.src = url;
        });
      }
    }
  }
  markActiveThumbs();
}

function markActiveThumbs(): void {
  const shown = new Set(state.slots.map((s) => s.series?.key));
  seriesPanel.querySelectorAll<HTMLElement>('.cf-thumb').forEach((el, i) => {
    el.classList.toggle('cf-shown', shown.has(state.allSeries[i]?.key));
  });
}

// ---------------------------------------------------------------------------------------------
// Viewports

function makeCell(index: number): Slot {
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

function stackViewport(slot: Slot | undefined): Types.IStackViewport | undefined {
  if (!slot || slot.kind !== 'stack') return undefined;
  return engine.getViewport(slot.viewportId) as Types.IStackViewport | undefined;
}

function anyViewport(slot: Slot | undefined): Types.IViewport | undefined {
  if (!slot || slot.kind === 'empty') return undefined;
  return engine.getViewport(slot.viewportId);
}

function setActive(index: number): void {
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

function disableAll(): void {
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

function applyInitialVoi(slot: Slot): void {
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

function currentMeta(slot: Slot): DicomJson | undefined {
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

// ---------------------------------------------------------------------------------------------
// Overlays

function fmtDate(d: string): string {
  return d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}` : d;
}

function fmtAge(age: string): string {
  const m = /^0*(\d+)([YMWD])$/.exec(age);
  if (!m) return age;
  if (m[2] === 'Y') return getLang() === 'zh' ? `${m[1]}${t('age_y')}` : `${m[1]}${t('age_y')}`;
  return `${m[1]}${m[2]}`;
}

function sexText(s: string): string {
  if (getLang() === 'zh') return s === 'M' ? '男' : s === 'F' ? '女' : s;
  return s;
}

function orientationLetters(v: number[]): string {
  const letters: Array<[number, string]> = [
    [v[0], v[0] > 0 ? 'L' : 'R'],
    [v[1], v[1] > 0 ? 'P' : 'A'],
    [v[2], v[2] > 0 ? 'H' : 'F'],
  ];
  letters.sort((a, b) => Math.abs(b[0]) - Math.abs(a[0]));
  let out = '';
  for (const [c, l] of letters) if (Math.abs(c) > 0.25) out += l;
  return out;
}

function updateOrientation(slot: Slot): void {
  const vp = anyViewport(slot);
  if (!vp || slot.kind === 'vr') {
    Object.values(slot.orient).forEach((el) => (el.textContent = ''));
    return;
  }
  const ds = slot.kind === 'stack' ? currentMeta(slot) : undefined;
  if (slot.kind === 'stack' && !numbers(ds, TAG.ImageOrientationPatient)) {
    Object.values(slot.orient).forEach((el) => (el.textContent = ''));
    return;
  }
  const cam = vp.getCamera();
  const up = cam.viewUp as number[];
  const n = cam.viewPlaneNormal as number[];
  // Screen right, with viewPlaneNormal pointing from the scene towards the viewer.
  const right = [up[1] * n[2] - up[2] * n[1], up[2] * n[0] - up[0] * n[2], up[0] * n[1] - up[1] * n[0]];
  const neg = (a: number[]) => a.map((x) => -x);
  slot.orient.right.textContent = orientationLetters(right);
  slot.orient.left.textContent = orientationLetters(neg(right));
  slot.orient.top.textContent = orientationLetters(up);
  slot.orient.bottom.textContent = orientationLetters(neg(up));
}

function line(text: string, cls = ''): HTMLDivElement {
  return h('div', cls ? { class: cls } : {}, [text]) as HTMLDivElement;
}

export function updateOverlay(slot: Slot): void {
  const vp = anyViewport(slot);
  const series = slot.series;
  if (!vp || !series) {
    Object.values(slot.overlay).forEach((el) => el.replaceChildren());
    return;
  }
  const study = state.studies[series.studyIndex];
  const p = study.patient;
  slot.overlay.tl.replaceChildren(
    line(p.name, 'cf-name'),
    line(`ID: ${p.id}`),
    line([sexText(p.sex), fmtAge(p.age)].filter(Boolean).join(' ')),
    line(fmtDate(p.studyDate)),
    line(p.institution),
  );
  const ds = slot.kind === 'stack' ? currentMeta(slot) : series.instances[0];
  const idx = slot.kind === 'stack' ? (vp as Types.IStackViewport).getCurrentImageIdIndex() : 0;
  const total = series.imageIds.length;
  const trLines = [line(p.studyDescription), line(`${t('se')}: ${series.number} ${series.description}`)];
  if (slot.kind === 'stack') {
    trLines.push(line(`${t('im')}: ${idx + 1}/${total}  #${value(ds, TAG.InstanceNumber) ?? ''}`, 'cf-im'));
  } else if (slot.orientation) {
    trLines.push(line(t(slot.orientation)));
  } else if (slot.kind === 'vr') {
    trLines.push(line(t('volume3d')));
  }
  slot.overlay.tr.replaceChildren(...trLines);
  const bl: HTMLDivElement[] = [];
  if (slot.kind === 'stack') {
    const loc = value(ds, TAG.SliceLocation);
    const thick = value(ds, TAG.SliceThickness);
    if (loc !== undefined) bl.push(line(`${t('loc')}: ${Number(loc).toFixed(1)} mm`));
    if (thick !== undefined) bl.push(line(`${t('thick')}: ${Number(thick).toFixed(1)} mm`));
    if (!numbers(ds, TAG.PixelSpacing)) {
      if (numbers(ds, TAG.ImagerPixelSpacing)) bl.push(line(t('imager_spacing'), 'cf-note'));
      else bl.push(line(t('no_spacing'), 'cf-note'));
    }
  }
  if (slot.kind !== 'vr') bl.push(line(`${t('zoom')}: ${(viewportZoom(slot) * 100).toFixed(0)}%`));
  slot.overlay.bl.replaceChildren(...bl);
  const voi = voiOf(slot);
  slot.overlay.br.replaceChildren(
    ...(voi && slot.kind !== 'vr' ? [line(`W: ${Math.round(voi.ww)} L: ${Math.round(voi.wc)}`, 'cf-wl')] : []),
  );
  updateOrientation(slot);
  const loaded = series.loadedIds.size;
  slot.progress.style.width = total ? `${(100 * loaded) / total}%` : '0';
  slot.progress.classList.toggle('cf-hidden', loaded >= total);
}

function viewportZoom(slot: Slot): number {
  const vp = anyViewport(slot);
  if (!vp) return 1;
  // Zoom relative to "1 image pixel = 1 screen pixel".
  try {
    const cam = vp.getCamera();
    const canvas = vp.canvas;
    const heightMm = 2 * (cam.parallelScale ?? 1);
    const ds = slot.kind === 'stack' ? currentMeta(slot) : slot.series?.instances[0];
    const ps = numbers(ds, TAG.PixelSpacing) ?? numbers(ds, TAG.ImagerPixelSpacing) ?? [1, 1];
    const cssHeight = canvas.clientHeight || canvas.height;
    return cssHeight / (heightMm / ps[0]);
  } catch {
    return 1;
  }
}

function voiOf(slot: Slot): { wc: number; ww: number; lower: number; upper: number } | undefined {
  const vp = anyViewport(slot) as any;
  if (!vp) return undefined;
  const props = vp.getProperties?.();
  const range = props?.voiRange;
  if (!range) return undefined;
  const { windowWidth, windowCenter } = utilities.windowLevel.toWindowLevel(range.lower, range.upper);
  return { wc: windowCenter, ww: windowWidth, lower: range.lower, upper: range.upper };
}

// ---------------------------------------------------------------------------------------------
// Tools

function setupTools(): void {
  [
    WindowLevelTool,
    PanTool,
    ZoomTool,
    StackScrollTool,
    LengthTool,
    AngleTool,
    RectangleROITool,
    EllipticalROITool,
    StackProbeTool,
    MagnifyTool,
    ReferenceLinesTool,
    CrosshairsTool,
    TrackballRotateTool,
  ].forEach((tool) => csTools.addTool(tool as any));

  const stack = ToolGroupManager.createToolGroup(STACK_GROUP)!;
  const mpr = ToolGroupManager.createToolGroup(MPR_GROUP)!;
  for (const g of [stack, mpr]) {
    for (const def of Object.values(PRIMARY_TOOLS)) g.addTool(def.tool);
    g.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    g.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    g.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    for (const name of ANNOTATION_TOOLS) g.setToolPassive(name);
  }
  stack.addTool(ReferenceLinesTool.toolName, { sourceViewportId: 'vp0' });
  stack.setToolEnabled(ReferenceLinesTool.toolName);
  mpr.addTool(CrosshairsTool.toolName, {
    getReferenceLineColor: (id: string) =>
      ({ mpr_axial: 'rgb(230, 80, 80)', mpr_sagittal: 'rgb(240, 220, 60)', mpr_coronal: 'rgb(80, 200, 80)' })[id] ??
      'rgb(200,200,200)',
    getReferenceLineControllable: () => true,
    getReferenceLineDraggableRotatable: () => true,
    getReferenceLineSlabThicknessControlsOn: () => false,
  });
  const vr = ToolGroupManager.createToolGroup(VR_GROUP)!;
  vr.addTool(TrackballRotateTool.toolName);
  vr.addTool(ZoomTool.toolName);
  vr.addTool(PanTool.toolName);
  vr.setToolActive(TrackballRotateTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
  vr.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
  vr.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
  setPrimary('wl');

  sliceSync = synchronizers.createImageSliceSynchronizer('cf-slice-sync');
  voiSync = synchronizers.createVOISynchronizer('cf-voi-sync', { syncInvertState: false, syncColormap: false } as any);
  zoomSync = synchronizers.createZoomPanSynchronizer('cf-zoom-sync');
  applyToggles();
}

function addToSynchronizers(slot: Slot): void {
  const id = { renderingEngineId: ENGINE_ID, viewportId: slot.viewportId };
  if (state.syncScroll) sliceSync.add(id);
  if (state.syncWL) voiSync.add(id);
  if (state.syncZoom) zoomSync.add(id);
}

function applyToggles(): void {
  const pairs: Array<[any, boolean]> = [
    [sliceSync, state.syncScroll],
    [voiSync, state.syncWL],
    [zoomSync, state.syncZoom],
  ];
  for (const [sync, on] of pairs) {
    sync.getSourceViewports().forEach((v: any) => sync.remove(v));
    if (on && state.mode === 'stack') {
      for (const slot of state.slots) {
        if (slot.kind === 'stack') sync.add({ renderingEngineId: ENGINE_ID, viewportId: slot.viewportId });
      }
    }
  }
  if (state.syncScroll) {
    // A fresh link: registration between different frames of reference (a prior) is taken from
    // the positions shown now.
    const reg = (utilities as any).spatialRegistrationMetadataProvider;
    for (const a of state.slots) for (const b of state.slots) if (a !== b) reg?.add?.([a.viewportId, b.viewportId], undefined);
  }
  const stack = ToolGroupManager.getToolGroup(STACK_GROUP);
  if (stack) {
    if (state.refLines) {
      stack.setToolConfiguration(ReferenceLinesTool.toolName, { sourceViewportId: `vp${state.active}` });
      stack.setToolEnabled(ReferenceLinesTool.toolName);
    } else stack.setToolDisabled(ReferenceLinesTool.toolName);
  }
  document.querySelectorAll<HTMLElement>('[data-toggle]').forEach((b) => {
    b.classList.toggle('on', Boolean((state as any)[b.dataset.toggle!]));
    b.setAttribute('aria-pressed', String(Boolean((state as any)[b.dataset.toggle!])));
  });
  engine?.render();
}

export function setPrimary(name: string): void {
  const def = PRIMARY_TOOLS[name];
  if (!def) return;
  for (const gid of [STACK_GROUP, MPR_GROUP]) {
    const g = ToolGroupManager.getToolGroup(gid);
    if (!g) continue;
    const prev = PRIMARY_TOOLS[state.primary]?.tool;
    if (gid === MPR_GROUP && g.hasTool?.(CrosshairsTool.toolName)) g.setToolPassive(CrosshairsTool.toolName);
    if (prev && prev !== def.tool) {
      if (ANNOTATION_TOOLS.includes(prev)) g.setToolPassive(prev);
      else if (prev === PanTool.toolName) g.setToolActive(prev, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
      else if (prev === ZoomTool.toolName) g.setToolActive(prev, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
      else if (prev === StackScrollTool.toolName) g.setToolActive(prev, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
      else g.setToolPassive(prev);
    }
    const extra =
      def.tool === PanTool.toolName
        ? [{ mouseButton: MouseBindings.Auxiliary }]
        : def.tool === ZoomTool.toolName
          ? [{ mouseButton: MouseBindings.Secondary }]
          : def.tool === StackScrollTool.toolName
            ? [{ mouseButton: MouseBindings.Wheel }]
            : [];
    g.setToolActive(def.tool, { bindings: [{ mouseButton: MouseBindings.Primary }, ...extra] });
  }
  state.primary = name;
  state.touchMode = ANNOTATION_TOOLS.includes(def.tool) || name === 'magnify' ? 'tool' : name === 'wl' ? state.touchMode : state.touchMode;
  if (ANNOTATION_TOOLS.includes(def.tool) || name === 'magnify') state.touchMode = 'tool';
  else if (name === 'wl' && state.touchMode === 'tool') state.touchMode = 'wl';
  else if (state.touchMode === 'tool') state.touchMode = 'scroll';
  document.querySelectorAll<HTMLElement>('[data-tool]').forEach((b) => {
    b.classList.toggle('on', b.dataset.tool === name);
    b.setAttribute('aria-pressed', String(b.dataset.tool === name));
  });
  document.getElementById('cf-touch-wl')?.classList.toggle('on', state.touchMode === 'wl');
}

function setMprCrosshairs(): void {
  const g = ToolGroupManager.getToolGroup(MPR_GROUP);
  if (!g) return;
  const prev = PRIMARY_TOOLS[state.primary]?.tool;
  if (prev && ANNOTATION_TOOLS.includes(prev)) g.setToolPassive(prev);
  else if (prev === WindowLevelTool.toolName || prev === MagnifyTool.toolName) g.setToolPassive(prev);
  g.setToolActive(CrosshairsTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
  document.querySelectorAll<HTMLElement>('[data-tool]').forEach((b) => b.classList.remove('on'));
}

// ---------------------------------------------------------------------------------------------
// Actions

function activeSlot(): Slot | undefined {
  return state.slots[state.active];
}

export function applyPreset(name: string, slot = activeSlot()): void {
  const vp = anyViewport(slot) as any;
  if (!vp || !slot) return;
  if (name === 'default') {
    if (slot.kind === 'stack') {
      vp.resetProperties?.();
      applyInitialVoi(slot);
    }
  } else {
    const p = PRESETS[name];
    if (!p) return;
    vp.setProperties({ voiRange: utilities.windowLevel.toLowHighRange(p.ww, p.wc) });
  }
  vp.render(); // VOI_MODIFIED follows, which the W/L synchroniser (when on) passes on
  updateOverlay(slot);
}

export function action(name: string): void {
  const slot = activeSlot();
  const vp = anyViewport(slot) as any;
  switch (name) {
    case 'invert':
      if (vp) {
        vp.setProperties({ invert: !vp.getProperties().invert });
        vp.render();
      }
      break;
    case 'rotate':
      if (vp) {
        const r = (vp.getViewPresentation().rotation ?? 0) as number;
        vp.setViewPresentation({ rotation: (r + 90) % 360 });
        vp.render();
      }
      break;
    case 'flipH':
    case 'flipV':
      if (vp) {
        const cam = vp.getCamera();
        const key = name === 'flipH' ? 'flipHorizontal' : 'flipVertical';
        vp.setCamera({ [key]: !cam[key] });
        vp.render();
      }
      break;
    case 'reset':
      if (vp && slot) {
        if (slot.kind === 'stack') {
          vp.resetProperties();
          vp.setViewPresentation({ rotation: 0, flipHorizontal: false, flipVertical: false });
          vp.resetCamera();
          applyInitialVoi(slot);
        } else {
          vp.resetCamera();
          vp.resetProperties?.();
          if (slot.series?.modality === 'CT' && slot.kind === 'mpr') {
            vp.setProperties({ voiRange: utilities.windowLevel.toLowHighRange(400, 40) });
          }
        }
        vp.render();
      }
      break;
    case 'clear':
      annotation.state.removeAllAnnotations();
      engine.render();
      break;
    case 'deleteSel': {
      const sel = annotation.selection.getAnnotationsSelected();
      sel.forEach((uid: string) => annotation.state.removeAnnotation(uid));
      engine.render();
      break;
    }
    case 'cine':
      if (state.cine.timer !== null) stopCine();
      else startCine(state.cine.fps);
      break;
    case 'export':
      void exportPng();
      break;
    case 'mpr':
      if (state.mode === 'mpr') setLayout(state.layout);
      else void enterMpr();
      break;
    case 'mip':
      if (state.mode !== 'mpr') void enterMpr().then(() => setMip(true));
      else setMip(!state.mip);
      break;
    case 'vr':
      if (state.mode !== 'mpr') void enterMpr().then(() => setVr(true));
      else setVr(!state.vr);
      break;
  }
  if (slot) updateOverlay(slot);
}

export function scrollBy(delta: number, slot = activeSlot()): void {
  const vp = anyViewport(slot);
  if (!vp) return;
  utilities.scroll(vp, { delta });
}

function jumpTo(index: number, slot = activeSlot()): void {
  const vp = stackViewport(slot);
  if (!vp) return;
  const n = vp.getImageIds().length;
  void vp.setImageIdIndex(Math.max(0, Math.min(n - 1, index)));
}

export function startCine(fps: number): void {
  stopCine();
  state.cine.fps = fps;
  const fpsInput = document.getElementById('cf-fps') as HTMLInputElement | null;
  if (fpsInput) fpsInput.value = String(fps);
  let last = performance.now();
  const tick = (now: number) => {
    if (state.cine.timer === null) return;
    if (now - last >= 1000 / state.cine.fps) {
      last = now;
      const slot = activeSlot();
      const vp = stackViewport(slot);
      if (vp) {
        const n = vp.getImageIds().length;
        const next = (vp.getCurrentImageIdIndex() + 1) % n;
        // Play only through frames already decoded, so cine never stalls on the network.
        const id = vp.getImageIds()[next];
        if (cache.getImageLoadObject(id) || slot?.series?.loadedIds.has(id)) void vp.setImageIdIndex(next);
      } else if (slot && slot.kind === 'mpr') {
        scrollBy(1, slot);
      }
    }
    state.cine.timer = requestAnimationFrame(tick);
  };
  state.cine.timer = requestAnimationFrame(tick);
  document.querySelector('[data-action="cine"]')?.classList.add('on');
}

export function stopCine(): void {
  if (state.cine.timer !== null) cancelAnimationFrame(state.cine.timer);
  state.cine.timer = null;
  document.querySelector('[data-action="cine"]')?.classList.remove('on');
}

async function exportPng(): Promise<string | undefined> {
  const slot = activeSlot();
  const vp = anyViewport(slot);
  if (!vp || !slot) return;
  const src = vp.canvas as HTMLCanvasElement;
  const out = document.createElement('canvas');
  out.width = src.width;
  out.height = src.height;
  const ctx = out.getContext('2d')!;
  ctx.drawImage(src, 0, 0);
  // Annotations live in an SVG layer over the canvas: draw them in as well.
  const svg = slot.element.querySelector('svg');
  if (svg) {
    const xml = new XMLSerializer().serializeToString(svg);
    const img = new Image();
    img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(xml)}`;
    try {
      await img.decode();
      ctx.drawImage(img, 0, 0, out.width, out.height);
    } catch {
      /* annotations are optional in the export */
    }
  }
  const url = out.toDataURL('image/png');
  const a = document.createElement('a');
  a.href = url;
  const s = slot.series;
  a.download = `cloudfilm-${s?.modality ?? 'image'}-se${s?.number ?? 0}-${(stackViewport(slot)?.getCurrentImageIdIndex() ?? 0) + 1}.png`;
  document.body.append(a);
  a.click();
  a.remove();
  return url;
}

// ---------------------------------------------------------------------------------------------
// MPR / MIP / 3D

async function enterMpr(series?: SeriesEntry): Promise<void> {
  const s =
    series ??
    (activeSlot()?.series?.reconstructable ? activeSlot()!.series : state.allSeries.find((x) => x.reconstructable && x.imageIds.length));
  if (!s) {
    showStatus('MPR: no volume series');
    return;
  }
  await loadSeriesMetadata(s);
  if (!s.reconstructable) {
    showStatus('MPR: no volume series');
    return;
  }
  disableAll();
  state.mode = 'mpr';
  state.mprSeries = s;
  state.mip = false;
  state.vr = false;
  document.body.classList.add('cf-mpr-mode');
  grid.className = 'cf-grid layout-mpr';
  grid.style.gridTemplateRows = 'repeat(2, minmax(0, 1fr))';
  grid.style.gridTemplateColumns = 'repeat(2, minmax(0, 1fr))';
  grid.replaceChildren();
  const orientations: Array<'axial' | 'sagittal' | 'coronal'> = ['axial', 'sagittal', 'coronal'];
  for (let i = 0; i < 4; i++) {
    const slot = makeCell(i);
    slot.viewportId = i < 3 ? `mpr_${orientations[i]}` : 'vr3d';
    slot.series = s;
    slot.cell.classList.add('cf-has-series');
    state.slots.push(slot);
    grid.append(slot.cell);
  }
  applyI18n(grid);
  state.active = 0;
  state.slots.forEach((x) => x.cell.classList.toggle('cf-active', x.index === 0));
  const inputs = state.slots.slice(0, 3).map((slot, i) => ({
    viewportId: slot.viewportId,
    element: slot.element,
    type: Enums.ViewportType.ORTHOGRAPHIC,
    defaultOptions: { orientation: (Enums.OrientationAxis as any)[orientations[i].toUpperCase()], background: [0, 0, 0] as Types.Point3 },
  }));
  engine.setViewports(inputs as any);
  const mpr = ToolGroupManager.getToolGroup(MPR_GROUP)!;
  state.slots.slice(0, 3).forEach((slot, i) => {
    slot.kind = 'mpr';
    slot.orientation = orientations[i];
    mpr.addViewport(slot.viewportId, ENGINE_ID);
    slot.element.addEventListener(Enums.Events.CAMERA_MODIFIED, () => updateOverlay(slot));
    slot.element.addEventListener(Enums.Events.VOI_MODIFIED, () => updateOverlay(slot));
    slot.element.addEventListener(Enums.Events.IMAGE_RENDERED, () => updateOverlay(slot));
  });
  const volumeId = `cornerstoneStreamingImageVolume:${s.seriesUID}`;
  const volume = await volumeLoader.createAndCacheVolume(volumeId, { imageIds: s.imageIds });
  (volume as any).load?.();
  await setVolumesForViewports(
    engine,
    [
      {
        volumeId,
        callback: ({ volumeActor }: any) => {
          if (s.modality === 'CT') {
            volumeActor.getProperty().getRGBTransferFunction(0).setMappingRange(-160, 240);
          }
        },
      },
    ],
    state.slots.slice(0, 3).map((x) => x.viewportId),
  );
  setMprCrosshairs();
  engine.render();
  state.slots.forEach(updateOverlay);
  document.querySelector('[data-action="mpr"]')?.classList.add('on');
}

function setMip(on: boolean): void {
  state.mip = on;
  for (const slot of state.slots.slice(0, 3)) {
    const vp = anyViewport(slot) as any;
    if (!vp) continue;
    vp.setBlendMode(on ? Enums.BlendModes.MAXIMUM_INTENSITY_BLEND : Enums.BlendModes.COMPOSITE);
    vp.setSlabThickness(on ? 20 : 0.1);
    if (on && slot.series?.modality === 'CT') vp.setProperties({ voiRange: { lower: -200, upper: 1200 } });
    vp.render();
  }
  document.querySelector('[data-action="mip"]')?.classList.toggle('on', on);
}

async function setVr(on: boolean): Promise<void> {
  const slot = state.slots[3];
  const s = state.mprSeries;
  if (!slot || !s) return;
  state.vr = on;
  if (on) {
    engine.enableElement({
      viewportId: slot.viewportId,
      element: slot.element,
      type: Enums.ViewportType.VOLUME_3D,
      defaultOptions: { background: [0.05, 0.05, 0.1] as Types.Point3, orientation: Enums.OrientationAxis.CORONAL },
    } as any);
    slot.kind = 'vr';
    ToolGroupManager.getToolGroup(VR_GROUP)!.addViewport(slot.viewportId, ENGINE_ID);
    const volumeId = `cornerstoneStreamingImageVolume:${s.seriesUID}`;
    await setVolumesForViewports(engine, [{ volumeId }], [slot.viewportId]);
    const vp = engine.getViewport(slot.viewportId) as any;
    vp.setProperties({ preset: s.modality === 'CT' ? 'CT-Bone' : 'MR-Default' });
    vp.resetCamera();
    vp.render();
  } else if (slot.kind === 'vr') {
    ToolGroupManager.getToolGroup(VR_GROUP)?.removeViewports(ENGINE_ID, slot.viewportId);
    engine.disableElement(slot.viewportId);
    slot.kind = 'empty';
  }
  updateOverlay(slot);
  document.querySelector('[data-action="vr"]')?.classList.toggle('on', on);
}

// ---------------------------------------------------------------------------------------------
// Touch: one finger scrolls (or W/L in W/L mode), pinch zooms, two fingers pan. With a
// measurement tool chosen, one finger goes to the tool.

function attachTouch(slot: Slot): void {
  const cell = slot.cell;
  let start: { x: number; y: number; dist: number; cx: number; cy: number; n: number } | null = null;
  let acc = 0;
  const pts = (e: TouchEvent) => Array.from(e.touches).map((tp) => ({ x: tp.clientX, y: tp.clientY }));
  const geometry = (p: Array<{ x: number; y: number }>) => {
    if (p.length < 2) return { cx: p[0].x, cy: p[0].y, dist: 0 };
    return {
      cx: (p[0].x + p[1].x) / 2,
      cy: (p[0].y + p[1].y) / 2,
      dist: Math.hypot(p[0].x - p[1].x, p[0].y - p[1].y),
    };
  };
  const mine = (e: TouchEvent) => e.touches.length >= 2 || state.touchMode !== 'tool';
  cell.addEventListener(
    'touchstart',
    (e) => {
      setActive(slot.index);
      if (!mine(e) || slot.kind === 'empty') return;
      if ((e.target as HTMLElement).classList.contains('cf-slider')) return;
      e.stopPropagation();
      e.preventDefault();
      const p = pts(e);
      const g = geometry(p);
      start = { x: p[0].x, y: p[0].y, dist: g.dist, cx: g.cx, cy: g.cy, n: p.length };
      acc = 0;
    },
    { capture: true, passive: false },
  );
  cell.addEventListener(
    'touchmove',
    (e) => {
      if (!start || !mine(e)) return;
      e.stopPropagation();
      e.preventDefault();
      const vp = anyViewport(slot) as any;
      if (!vp) return;
      const p = pts(e);
      if (p.length >= 2) {
        const g = geometry(p);
        if (start.n < 2) {
          start = { x: p[0].x, y: p[0].y, dist: g.dist, cx: g.cx, cy: g.cy, n: 2 };
          return;
        }
        if (start.dist > 0 && g.dist > 0) {
          const factor = g.dist / start.dist;
          vp.setZoom(vp.getZoom() * factor);
        }
        const rect = slot.element.getBoundingClientRect();
        const a = vp.canvasToWorld([start.cx - rect.left, start.cy - rect.top]);
        const b = vp.canvasToWorld([g.cx - rect.left, g.cy - rect.top]);
        const cam = vp.getCamera();
        const d = [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
        vp.setCamera({
          focalPoint: cam.focalPoint.map((v: number, i: number) => v + d[i]),
          position: cam.position.map((v: number, i: number) => v + d[i]),
        });
        vp.render();
        start = { ...start, dist: g.dist, cx: g.cx, cy: g.cy };
        return;
      }
      const dx = p[0].x - start.x;
      const dy = p[0].y - start.y;
      if (state.touchMode === 'wl' && slot.kind !== 'vr') {
        const voi = voiOf(slot);
        if (voi) {
          const scale = slot.series?.modality === 'CT' ? 4 : Math.max(1, voi.ww / 200);
          const ww = Math.max(1, voi.ww + dx * scale);
          const wc = voi.wc + dy * scale;
          vp.setProperties({ voiRange: utilities.windowLevel.toLowHighRange(ww, wc) });
          vp.render();
        }
        start = { ...start, x: p[0].x, y: p[0].y };
      } else {
        const n = slot.series?.imageIds.length ?? 1;
        const step = Math.max(6, Math.min(24, slot.element.clientHeight / Math.max(1, n)));
        acc -= dy; // finger up: next slice
        const k = Math.trunc(acc / step);
        if (k !== 0) {
          acc -= k * step;
          scrollBy(k, slot);
        }
        start = { ...start, x: p[0].x, y: p[0].y };
      }
    },
    { capture: true, passive: false },
  );
  const end = (e: TouchEvent) => {
    if (!start) return;
    e.stopPropagation();
    if (e.touches.length === 0) start = null;
    else {
      const p = pts(e);
      const g = geometry(p);
      start = { x: p[0].x, y: p[0].y, dist: g.dist, cx: g.cx, cy: g.cy, n: p.length };
    }
  };
  cell.addEventListener('touchend', end, { capture: true });
  cell.addEventListener('touchcancel', end, { capture: true });
}

// ---------------------------------------------------------------------------------------------
// Keyboard

function onKey(e: KeyboardEvent): void {
  const tgt = e.target as HTMLElement;
  if (tgt && (tgt.tagName === 'INPUT' || tgt.tagName === 'SELECT' || tgt.tagName === 'TEXTAREA')) return;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key;
  const slot = activeSlot();
  const vp = stackViewport(slot);
  switch (k) {
    case 'ArrowUp':
    case 'ArrowLeft':
      scrollBy(-1);
      break;
    case 'ArrowDown':
    case 'ArrowRight':
      scrollBy(1);
      break;
    case 'PageUp':
      scrollBy(-10);
      break;
    case 'PageDown':
      scrollBy(10);
      break;
    case 'Home':
      jumpTo(0);
      break;
    case 'End':
      if (vp) jumpTo(vp.getImageIds().length - 1);
      break;
    case ' ':
      action('cine');
      break;
    case 'Delete':
    case 'Backspace':
      action('deleteSel');
      break;
    case 'i':
      action('invert');
      break;
    case 'o':
      action('rotate');
      break;
    case 'h':
      action('flipH');
      break;
    case 'v':
      action('flipV');
      break;
    case '0':
      action('reset');
      break;
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
      applyPreset(Object.keys(PRESETS)[Number(k) - 1]);
      break;
    case '6':
      applyPreset('default');
      break;
    default: {
      const tool = Object.entries(PRIMARY_TOOLS).find(([, d]) => d.key === k.toLowerCase());
      if (!tool) return;
      setPrimary(tool[0]);
    }
  }
  e.preventDefault();
}

// ---------------------------------------------------------------------------------------------
// Status line

// Two parts: the network message, shown for as long as the network (or the server) is
// unreachable, and a passing message (an image that did not decode, …) hidden after 6 s. Both
// follow the language switch.

let statusTimer = 0;
let passing: (() => string) | null = null;

function renderStatus(): void {
  const el = document.getElementById('cf-status');
  if (!el) return;
  const parts: string[] = [];
  if (networkDown()) parts.push(t('err_network'));
  if (passing) {
    const text = passing();
    if (!parts.includes(text)) parts.push(text);
  }
  if (parts.length) el.textContent = parts.join(' ');
  el.classList.toggle('show', parts.length > 0);
}

function showStatus(text: string | (() => string)): void {
  passing = typeof text === 'string' ? () => text : text;
  clearTimeout(statusTimer);
  statusTimer = window.setTimeout(() => {
    passing = null;
    renderStatus();
  }, 6000);
  renderStatus();
}

/** A load of `failedId` failed: a stack viewport that was switching to it still shows its
 * previous image (Cornerstone has already made the failed slice its current index), so go back
 * to the slice on screen; overlay, slider, test hook and the next scroll then agree with the
 * pixels. */
function keepShownSlice(failedId: string): void {
  for (const slot of state.slots) {
    const vp = stackViewport(slot);
    if (!vp || vp.getCurrentImageId() !== failedId) continue;
    const shown = vp.getCornerstoneImage()?.imageId;
    const i = shown && shown !== failedId ? vp.getImageIds().indexOf(shown) : -1;
    if (i < 0) continue;
    (vp as any).currentImageIdIndex = i;
    (vp as any).targetImageIdIndex = i;
    slot.slider.value = String(i);
    if (slot.series && slot.index === state.active) setFocus(slot.series, i);
    vp.render();
    updateOverlay(slot);
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wireUi(): void {
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

// ---------------------------------------------------------------------------------------------
// Test hook and entry

function imageToPage(slotIndex: number, col: number, row: number): [number, number] {
  const slot = state.slots[slotIndex];
  const vp = anyViewport(slot)!;
  const imageId = (vp as any).getCurrentImageId?.() ?? slot.series!.imageIds[0];
  const world = utilities.imageToWorldCoords(imageId, [col + 0.5, row + 0.5] as Types.Point2);
  const canvas = vp.worldToCanvas(world as Types.Point3);
  const rect = slot.element.getBoundingClientRect();
  return [rect.left + canvas[0], rect.top + canvas[1]];
}

function worldToPage(slotIndex: number, world: number[]): [number, number] {
  const slot = state.slots[slotIndex];
  const vp = anyViewport(slot)!;
  const canvas = vp.worldToCanvas(world as Types.Point3);
  const rect = slot.element.getBoundingClientRect();
  return [rect.left + canvas[0], rect.top + canvas[1]];
}

function measurements(): any[] {
  const all = annotation.state.getAllAnnotations() as any[];
  return all
    .filter((a) => ANNOTATION_TOOLS.includes(a.metadata?.toolName))
    .map((a) => {
      const stats = Object.values(a.data?.cachedStats ?? {})[0] as any;
      return {
        uid: a.annotationUID,
        tool: a.metadata.toolName,
        stats: stats ? JSON.parse(JSON.stringify(stats, (_k, v) => (ArrayBuffer.isView(v) ? undefined : v))) : null,
        points: a.data?.handles?.points,
      };
    });
}

function snapshot(): any {
  return {
    mode: state.mode,
    layout: state.layout,
    active: state.active,
    primary: state.primary,
    touchMode: state.touchMode,
    lang: getLang(),
    firstImageAt: state.firstImageAt,
    previewAt: (window as any).__cfBoot?.previewAt ?? null,
    firstPaintAt: Math.min(state.firstImageAt ?? Infinity, (window as any).__cfBoot?.previewAt ?? Infinity),
    syncScroll: state.syncScroll,
    syncWL: state.syncWL,
    syncZoom: state.syncZoom,
    refLines: state.refLines,
    mip: state.mip,
    vr: state.vr,
    cine: state.cine.timer !== null,
    decodeErrors: state.decodeErrors,
    viewports: state.slots.map((slot) => {
      const vp = anyViewport(slot) as any;
      const voi = voiOf(slot);
      const cam = vp?.getCamera?.();
      const pres = vp?.getViewPresentation?.();
      return {
        id: slot.viewportId,
        kind: slot.kind,
        orientation: slot.orientation ?? null,
        seriesUID: slot.series?.seriesUID ?? null,
        modality: slot.series?.modality ?? null,
        index: slot.kind === 'stack' ? vp?.getCurrentImageIdIndex() : vp?.getSliceIndex?.() ?? null,
        total: slot.kind === 'stack' ? slot.series?.imageIds.length : vp?.getNumberOfSlices?.() ?? null,
        imageId: slot.kind === 'stack' ? vp?.getCurrentImageId() : null,
        instanceNumber: slot.kind === 'stack' ? Number(value(currentMeta(slot), TAG.InstanceNumber)) : null,
        rendered: slot.kind === 'stack' ? Boolean(vp?.getCornerstoneImage?.()) : Boolean(vp),
        voi: voi ?? null,
        invert: Boolean(vp?.getProperties?.()?.invert),
        rotation: pres?.rotation ?? 0,
        flipH: Boolean(cam?.flipHorizontal),
        flipV: Boolean(cam?.flipVertical),
        zoom: vp ? viewportZoom(slot) : null,
        orient: Object.fromEntries(Object.entries(slot.orient).map(([k, el]) => [k, el.textContent])),
        focalPoint: cam?.focalPoint ? Array.from(cam.focalPoint) : null,
        viewPlaneNormal: cam?.viewPlaneNormal ? Array.from(cam.viewPlaneNormal) : null,
        overlay: Object.fromEntries(Object.entries(slot.overlay).map(([k, el]) => [k, el.innerText])),
      };
    }),
    series: state.allSeries.map((s) => ({
      uid: s.seriesUID,
      study: s.studyUID,
      modality: s.modality,
      description: s.description,
      loaded: s.loadedIds.size,
      failed: s.failedIds.size,
      total: s.imageIds.length || s.expectedInstances,
      loadedAt: s.loadedAt ?? null,
    })),
    measurements: measurements(),
  };
}

export async function startViewer(root: HTMLElement, studies: StudyEntry[], t0: number): Promise<void> {
  state.studies = studies;
  state.allSeries = studies.flatMap((s) => s.series);
  performance.mark('cf:start-viewer');
  buildShell(root);
  performance.mark('cf:shell');
  engine = new RenderingEngine(ENGINE_ID);
  performance.mark('cf:engine');
  setupTools();
  performance.mark('cf:tools');
  wireUi();
  (window as any).cloudfilmViewer = {
    state: snapshot,
    firstImage,
    t0,
    imageToPage,
    worldToPage,
    setPrimary,
    action,
    applyPreset,
    setLayout,
    scrollBy,
    jumpTo: (i: number, slotIndex?: number) => jumpTo(i, slotIndex === undefined ? activeSlot() : state.slots[slotIndex]),
    setActive,
    startCine,
    stopCine,
    showSeries: (slotIndex: number, seriesUID: string) => {
      const s = state.allSeries.find((x) => x.seriesUID === seriesUID);
      return s ? showSeries(slotIndex, s) : Promise.reject(new Error('no such series'));
    },
    enterMpr: (seriesUID?: string) => enterMpr(state.allSeries.find((x) => x.seriesUID === seriesUID)),
    setMip,
    setVr,
    exportPng,
    toggle: (name: 'syncScroll' | 'syncWL' | 'syncZoom' | 'refLines', on: boolean) => {
      state[name] = on;
      applyToggles();
    },
    metaData,
    getRenderingEngine: () => getRenderingEngine(ENGINE_ID),
    /** When every frame of a series was cached (performance.now()), without building the whole
     * state() snapshot: the benchmark polls this. */
    loadedAt: (seriesUID: string) => state.allSeries.find((s) => s.seriesUID === seriesUID)?.loadedAt ?? null,
    frameStats: () => {
      const p = (window as any).__cfBoot?.frames;
      return p ? { frames: p.doneAt.length, ...p.kinds, bodyMs: Math.round(p.bodyMs), processMs: Math.round(p.processMs) } : null;
    },
    allLoaded: () => state.allSeries.every((s) => s.imageIds.length > 0 && s.loadedIds.size + s.failedIds.size >= s.imageIds.length),
  };
  renderSeriesPanel();
  setOrder(state.allSeries);
  void settled.then(() => startPrefetch());
  const compare = studies.length > 1;
  setLayout(compare ? '1x2' : '1x1', false);
  // Metadata of the other series (one request each), then thumbnails and prefetch.
  void (async () => {
    await settled;
    for (const s of state.allSeries) {
      try {
        await loadSeriesMetadata(s);
        for (const id of s.imageIds) state.byImageId.set(id, s);
        s.onProgress.forEach((fn) => fn());
        refresh();
      } catch (e) {
        console.warn('metadata failed', s.seriesUID, e);
      }
    }
  })();
}
