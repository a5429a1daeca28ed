// Actions on the active viewport: presets, invert/rotate/flip/reset, scrolling, cine, PNG export.

import { cache, utilities } from '@cornerstonejs/core';
import * as csTools from '@cornerstonejs/tools';
import { enterMpr, setMip, setVr } from './mpr';
import { updateOverlay } from './overlay';
import { anyViewport, applyInitialVoi, setLayout, stackViewport } from './viewports';
import { PRESETS, type Slot, engine, state } from './viewerState';

const { annotation } = csTools;

export function activeSlot(): Slot | undefined {
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

export function jumpTo(index: number, slot = activeSlot()): void {
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

export async function exportPng(): Promise<string | undefined> {
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
