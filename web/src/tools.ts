// Tools: tool groups, the primary (left button) tool, synchronisers, reference lines, crosshairs.

import { cache, utilities } from '@cornerstonejs/core';
import * as csTools from '@cornerstonejs/tools';
import {
  ANNOTATION_TOOLS,
  ENGINE_ID,
  MPR_GROUP,
  PRIMARY_TOOLS,
  STACK_GROUP,
  type Slot,
  VR_GROUP,
  engine,
  setSynchronizers,
  sliceSync,
  state,
  voiSync,
  zoomSync,
} from './viewerState';

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

export function setupTools(): void {
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

  setSynchronizers(
    synchronizers.createImageSliceSynchronizer('cf-slice-sync'),
    synchronizers.createVOISynchronizer('cf-voi-sync', { syncInvertState: false, syncColormap: false } as any),
    synchronizers.createZoomPanSynchronizer('cf-zoom-sync'),
  );
  applyToggles();
}

export function addToSynchronizers(slot: Slot): void {
  const id = { renderingEngineId: ENGINE_ID, viewportId: slot.viewportId };
  if (state.syncScroll) sliceSync.add(id);
  if (state.syncWL) voiSync.add(id);
  if (state.syncZoom) zoomSync.add(id);
}

export function applyToggles(): void {
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

export function setMprCrosshairs(): void {
  const g = ToolGroupManager.getToolGroup(MPR_GROUP);
  if (!g) return;
  const prev = PRIMARY_TOOLS[state.primary]?.tool;
  if (prev && ANNOTATION_TOOLS.includes(prev)) g.setToolPassive(prev);
  else if (prev === WindowLevelTool.toolName || prev === MagnifyTool.toolName) g.setToolPassive(prev);
  g.setToolActive(CrosshairsTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
  document.querySelectorAll<HTMLElement>('[data-tool]').forEach((b) => b.classList.remove('on'));
}
