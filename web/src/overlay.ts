// Overlays: patient and image text in the corners, orientation letters, zoom and W/L.

import { utilities, type Types } from '@cornerstonejs/core';
import { TAG, numbers, value } from './dicomweb';
import { getLang, t } from './i18n';
import { h } from './shell';
import { anyViewport, currentMeta } from './viewports';
import { type Slot, state } from './viewerState';

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

export function viewportZoom(slot: Slot): number {
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

export function voiOf(slot: Slot): { wc: number; ww: number; lower: number; upper: number } | undefined {
  const vp = anyViewport(slot) as any;
  if (!vp) return undefined;
  const props = vp.getProperties?.();
  const range = props?.voiRange;
  if (!range) return undefined;
  const { windowWidth, windowCenter } = utilities.windowLevel.toWindowLevel(range.lower, range.upper);
  return { wc: windowCenter, ww: windowWidth, lower: range.lower, upper: range.upper };
}
