// MPR / MIP / 3D: three orthogonal views of one volume series, and a volume rendering.

import { Enums, setVolumesForViewports, volumeLoader, type Types } from '@cornerstonejs/core';
import * as csTools from '@cornerstonejs/tools';
import { applyI18n } from './i18n';
import { type SeriesEntry, loadSeriesMetadata } from './study';
import { activeSlot } from './actions';
import { updateOverlay } from './overlay';
import { showStatus } from './status';
import { setMprCrosshairs } from './tools';
import { anyViewport, disableAll, makeCell } from './viewports';
import { ENGINE_ID, MPR_GROUP, VR_GROUP, engine, grid, state } from './viewerState';

const { ToolGroupManager } = csTools;

export async function enterMpr(series?: SeriesEntry): Promise<void> {
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

export function setMip(on: boolean): void {
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

export async function setVr(on: boolean): Promise<void> {
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
