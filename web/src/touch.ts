// Touch: one finger scrolls (or W/L in W/L mode), pinch zooms, two fingers pan. With a
// measurement tool chosen, one finger goes to the tool.

import { utilities } from '@cornerstonejs/core';
import { scrollBy } from './actions';
import { voiOf } from './overlay';
import { anyViewport, setActive } from './viewports';
import { type Slot, state } from './viewerState';

export function attachTouch(slot: Slot): void {
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
