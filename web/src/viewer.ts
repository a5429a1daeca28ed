// The viewer: layout, viewports, tools, overlays, synchronisers, MPR/3D, cine, export, touch.
// This module is the entry (startViewer) and the test hook (window.cloudfilmViewer); the parts
// live in the modules imported below, with the shared state in viewerState.ts.

import { RenderingEngine, getRenderingEngine, metaData, utilities, type Types } from '@cornerstonejs/core';
import * as csTools from '@cornerstonejs/tools';
import { TAG, value } from './dicomweb';
import { getLang } from './i18n';
import { refresh, setOrder, startPrefetch } from './loader';
import { type StudyEntry, loadSeriesMetadata } from './study';
import { action, activeSlot, applyPreset, exportPng, jumpTo, scrollBy, startCine, stopCine } from './actions';
import { enterMpr, setMip, setVr } from './mpr';
import { viewportZoom, voiOf } from './overlay';
import { renderSeriesPanel } from './seriesPanel';
import { buildShell } from './shell';
import { applyToggles, setPrimary, setupTools } from './tools';
import { anyViewport, currentMeta, setActive, setLayout, showSeries } from './viewports';
import { ANNOTATION_TOOLS, ENGINE_ID, firstImage, setEngine, settled, state } from './viewerState';
import { wireUi } from './wiring';

export { PRESETS } from './viewerState';
export { setLayout, showSeries } from './viewports';
export { updateOverlay } from './overlay';
export { setPrimary } from './tools';
export { action, applyPreset, scrollBy, startCine, stopCine } from './actions';

const { annotation } = csTools;

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
  setEngine(new RenderingEngine(ENGINE_ID));
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

