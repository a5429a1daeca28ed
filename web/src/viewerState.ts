// State shared by the viewer modules: constants, the layout and tool tables, the mutable
// viewer state, and the objects made once at start-up (rendering engine, grid, synchronisers).

import type { RenderingEngine } from '@cornerstonejs/core';
import * as csTools from '@cornerstonejs/tools';
import type { Key } from './i18n';
import type { SeriesEntry, StudyEntry } from './study';

const {
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
} = csTools;

export const ENGINE_ID = 'cloudfilm';
export const STACK_GROUP = 'cf-stack';
export const MPR_GROUP = 'cf-mpr';
export const VR_GROUP = 'cf-vr';

export type LayoutName = '1x1' | '1x2' | '2x1' | '2x2';
export const LAYOUTS: Record<LayoutName, [number, number]> = { '1x1': [1, 1], '1x2': [1, 2], '2x1': [2, 1], '2x2': [2, 2] };

export const PRESETS: Record<string, { wc: number; ww: number }> = {
  lung: { wc: -600, ww: 1500 },
  mediastinum: { wc: 40, ww: 350 },
  bone: { wc: 400, ww: 1800 },
  brain: { wc: 40, ww: 80 },
  abdomen: { wc: 50, ww: 400 },
};

export const PRIMARY_TOOLS: Record<string, { tool: string; label: Key; key: string; icon: string }> = {
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
export const ANNOTATION_TOOLS = [
  LengthTool.toolName,
  AngleTool.toolName,
  RectangleROITool.toolName,
  EllipticalROITool.toolName,
  ProbeTool.toolName,
];

export interface Slot {
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

export interface State {
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

export const state: State = {
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

// Made once at start-up. Other modules cannot assign an imported binding, so they go through
// the setters below.
export let engine: RenderingEngine;
export let grid: HTMLDivElement;
export let seriesPanel: HTMLDivElement;
export let sliceSync: any;
export let voiSync: any;
export let zoomSync: any;

export function setEngine(e: RenderingEngine): void {
  engine = e;
}

export function setShell(g: HTMLDivElement, panel: HTMLDivElement): void {
  grid = g;
  seriesPanel = panel;
}

export function setSynchronizers(slice: any, voi: any, zoom: any): void {
  sliceSync = slice;
  voiSync = voi;
  zoomSync = zoom;
}

export let firstImageResolve: (v: number) => void;
export const firstImage = new Promise<number>((r) => (firstImageResolve = r));
/** Background work (prefetch, thumbnails) starts when the first image is up, or after 2 s. */
export const settled = Promise.race([firstImage, new Promise((r) => setTimeout(r, 2000))]);
