// ECharts options for the console's three statistics charts, built from the stats JSON the
// server embeds in the page. Pure functions of (data, layout): a resize or a legend click
// builds the option again rather than patching the chart.
import type { BarSeriesOption, LineSeriesOption } from 'echarts/charts';
import type {
  GridComponentOption,
  LegendComponentOption,
  TooltipComponentOption,
} from 'echarts/components';
import type { ComposeOption } from 'echarts/core';
import {
  byteAxisScale,
  escapeHtml,
  formatBytes,
  formatCount,
  type Lang,
  type Metric,
  METRICS,
  words,
} from './format';

export type Option = ComposeOption<
  BarSeriesOption | LineSeriesOption | GridComponentOption | LegendComponentOption | TooltipComponentOption
>;

export interface Counts {
  studies: number;
  instances: number;
  bytes: number;
}
export interface DayRow extends Counts {
  date: string;
  films: number;
  views: number;
  shares: number;
  sms: number;
}
export interface ModalityRow extends Counts {
  modality: string;
}
export interface GroupRow extends Counts {
  code: string;
  name: string;
}
export interface Stats {
  lang: Lang;
  title: string;
  totals: Partial<Record<Metric, number>>;
  days: DayRow[];
  modalities: ModalityRow[];
  groups: GroupRow[];
}

export type ChartKind = 'days' | 'modalities' | 'groups';

/** What an option depends on besides the data: the element's size and the legend state. */
export interface Layout {
  lang: Lang;
  width: number;
  height: number;
  /** Legend selection by series name, as ECharts reports it; undefined: the defaults. */
  selected?: Record<string, boolean>;
  animation: boolean;
}

// One colour per metric, the same in every chart.
const COLOR: Record<Metric, string> = {
  studies: '#2563eb',
  instances: '#0e7490',
  bytes: '#d97706',
  films: '#7c3aed',
  views: '#16a34a',
  shares: '#db2777',
  sms: '#64748b',
};

export const FONT =
  '-apple-system, BlinkMacSystemFont, "Segoe UI", "PingFang SC", "Hiragino Sans GB", ' +
  '"Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC", system-ui, sans-serif';
const TEXT = '#334155';
const MUTED = '#64748b';
const LINE = '#e2e8f0';

export function isNarrow(width: number): boolean {
  return width < 560;
}

let measureCtx: CanvasRenderingContext2D | null = null;

/**
 * The height a plain (wrapping) legend takes at this width, so the grid starts below it: ECharts
 * does not move a grid out of a legend's way, and at 375 px seven names wrap to two rows.
 */
export function legendHeight(names: string[], width: number, itemGap: number): number {
  measureCtx ??= document.createElement('canvas').getContext('2d');
  const ctx = measureCtx;
  if (ctx) ctx.font = `12px ${FONT}`;
  const avail = width - 10; // legend padding 5 each side
  let rows = 1;
  let x = 0;
  for (const name of names) {
    const text = ctx ? ctx.measureText(name).width : name.length * 12;
    const item = 25 + 5 + text; // icon, gap to the text, the text
    if (x > 0 && x + itemGap + item > avail) {
      rows++;
      x = item;
    } else {
      x += (x > 0 ? itemGap : 0) + item;
    }
  }
  return rows * 16 + (rows - 1) * itemGap + 10;
}

function countFormatter(lang: Lang) {
  return (v: unknown) => formatCount(Number(v), lang);
}

function valueFormatter(metric: Metric, lang: Lang) {
  return metric === 'bytes'
    ? (v: unknown) => formatBytes(Number(v))
    : (v: unknown) => formatCount(Number(v), lang);
}

function baseOption(layout: Layout): Option {
  return {
    animation: layout.animation,
    textStyle: { fontFamily: FONT, color: TEXT },
    tooltip: {
      trigger: 'axis',
      confine: true, // stays inside the chart on a phone
      axisPointer: { type: 'shadow' },
      textStyle: { fontFamily: FONT, fontSize: 12 },
    },
  };
}

function legend(names: string[], itemGap: number, selected: Record<string, boolean>, single = false): LegendComponentOption {
  return {
    top: 0,
    left: 'center',
    itemGap,
    data: names,
    selected,
    selectedMode: single ? 'single' : true,
    textStyle: { fontFamily: FONT, color: TEXT, fontSize: 12 },
  };
}

const SIDE_METRICS: Metric[] = ['films', 'views', 'shares', 'sms'];

/**
 * Daily series in two stacked grids on one date axis: above, the per-patient events (studies
 * received as bars; films, views, shares, SMS as lines), which are of one order of magnitude;
 * below, images received (bars) with their bytes on a second axis. Images outnumber studies
 * a hundredfold, so on one axis the study bars would be flat.
 */
export function daysOption(days: DayRow[], layout: Layout): Option {
  const W = words(layout.lang);
  const lang = layout.lang;
  const narrow = isNarrow(layout.width);
  const gap = narrow ? 8 : 14;
  const names = METRICS.map((m) => W.metric[m]);
  const selected = layout.selected ?? Object.fromEntries(names.map((n) => [n, true]));
  const top = legendHeight(names, layout.width, gap) + 28; // + the axis names
  const xLabelH = 4; // outerBoundsMode "same": the date labels are inside the grid rect
  const between = 40; // the lower grid's axis names sit in here
  const plot = Math.max(160, layout.height - top - between - xLabelH);
  const upperH = Math.round(plot * 0.5);
  const lowerH = plot - upperH;
  const dates = days.map((d) => d.date);
  const side = narrow ? 4 : 8;
  const scale = byteAxisScale(Math.max(0, ...days.map((d) => d.bytes)));
  const showSymbol = days.length <= 31;

  const dateAxis = (gridIndex: number, labels: boolean) => ({
    type: 'category' as const,
    gridIndex,
    data: dates,
    axisTick: { alignWithLabel: true },
    axisLine: { lineStyle: { color: LINE } },
    axisLabel: {
      show: labels,
      color: MUTED,
      hideOverlap: true,
      // "12-01"; the tooltip gives the whole date.
      formatter: (d: string) => d.slice(5),
    },
  });
  const countAxis = (gridIndex: number, name: string) => ({
    type: 'value' as const,
    gridIndex,
    name,
    minInterval: 1,
    nameTextStyle: { color: MUTED, align: 'left' as const },
    axisLabel: { color: MUTED, formatter: countFormatter(lang) },
    splitLine: { lineStyle: { color: LINE } },
  });
  const line = (m: Metric, yAxisIndex: number): LineSeriesOption => ({
    id: m,
    name: W.metric[m],
    type: 'line',
    xAxisIndex: yAxisIndex === 0 ? 0 : 1,
    yAxisIndex,
    data: days.map((d) => d[m]),
    showSymbol,
    symbolSize: 5,
    itemStyle: { color: COLOR[m] },
    lineStyle: { width: 2 },
    tooltip: { valueFormatter: valueFormatter(m, lang) },
  });

  return {
    ...baseOption(layout),
    // One tooltip for both grids: the hovered day's seven figures together.
    axisPointer: { link: [{ xAxisIndex: 'all' }] },
    legend: legend(names, gap, selected),
    grid: [
      { left: side, right: side, top, height: upperH, outerBoundsMode: 'same', outerBoundsContain: 'axisLabel' },
      {
        left: side,
        right: side,
        top: top + upperH + between,
        height: lowerH,
        outerBoundsMode: 'same',
        outerBoundsContain: 'axisLabel',
      },
    ],
    xAxis: [dateAxis(0, false), dateAxis(1, true)],
    yAxis: [
      countAxis(0, W.count),
      countAxis(1, W.metric.instances),
      {
        type: 'value',
        gridIndex: 1,
        name: W.storage,
        nameTextStyle: { color: MUTED, align: 'right' },
        ...(scale ? { min: 0, max: scale.max, interval: scale.interval } : {}),
        axisLabel: { color: MUTED, formatter: (v: number) => formatBytes(v, scale?.unit) },
        splitLine: { show: false },
      },
    ],
    series: [
      {
        id: 'studies',
        name: W.metric.studies,
        type: 'bar',
        xAxisIndex: 0,
        yAxisIndex: 0,
        data: days.map((d) => d.studies),
        barMaxWidth: 24,
        itemStyle: { color: COLOR.studies, borderRadius: [2, 2, 0, 0] },
        tooltip: { valueFormatter: valueFormatter('studies', lang) },
      },
      ...SIDE_METRICS.map((m) => line(m, 0)),
      {
        id: 'instances',
        name: W.metric.instances,
        type: 'bar',
        xAxisIndex: 1,
        yAxisIndex: 1,
        data: days.map((d) => d.instances),
        barMaxWidth: 24,
        itemStyle: { color: COLOR.instances, borderRadius: [2, 2, 0, 0] },
        tooltip: { valueFormatter: valueFormatter('instances', lang) },
      },
      { ...line('bytes', 2), xAxisIndex: 1, areaStyle: { opacity: 0.12 } },
    ],
  };
}

export interface BarRow extends Counts {
  label: string;
  detail?: string;
}

const BAR_METRICS: Metric[] = ['studies', 'instances', 'bytes'];

/** The metric a single-select legend shows now (studies when nothing says otherwise). */
export function shownMetric(layout: Layout): Metric {
  const W = words(layout.lang);
  for (const m of BAR_METRICS) if (layout.selected?.[W.metric[m]]) return m;
  return 'studies';
}

/** Rows of a horizontal bar chart take this much height each; the element grows with them. */
export function barChartHeight(rows: number, width: number, lang: Lang): number {
  const W = words(lang);
  const names = BAR_METRICS.map((m) => W.metric[m]);
  const rowH = isNarrow(width) ? 30 : 32;
  return Math.max(200, legendHeight(names, width, 12) + 16 + rows * rowH + 36);
}

/**
 * Horizontal bars, one row per modality or organisation (names stay readable at 375 px), with
 * a single-select legend: studies, images or storage. One metric at a time because they differ
 * by orders of magnitude and in unit; the value axis follows the chosen one.
 */
export function barsOption(rows: BarRow[], layout: Layout): Option {
  const W = words(layout.lang);
  const lang = layout.lang;
  const narrow = isNarrow(layout.width);
  const names = BAR_METRICS.map((m) => W.metric[m]);
  const shown = shownMetric(layout);
  const selected = Object.fromEntries(BAR_METRICS.map((m) => [W.metric[m], m === shown]));
  const scale = shown === 'bytes' ? byteAxisScale(Math.max(0, ...rows.map((r) => r.bytes))) : null;
  const fmt = valueFormatter(shown, lang);

  const tooltipFormatter = (params: any) => {
    const p = Array.isArray(params) ? params[0] : params;
    const row = rows[p?.dataIndex];
    if (!row) return '';
    const head = `<b>${escapeHtml(row.label)}</b>${row.detail ? ` <span style="color:${MUTED}">${escapeHtml(row.detail)}</span>` : ''}`;
    const lines = BAR_METRICS.map((m) => {
      const v = m === 'bytes' ? formatBytes(row.bytes) : formatCount(row[m], lang);
      const dot = `<span style="display:inline-block;width:8px;height:8px;border-radius:4px;margin-right:6px;background:${COLOR[m]}"></span>`;
      return `${dot}${escapeHtml(W.metric[m])}: <b>${escapeHtml(v)}</b>`;
    });
    return [head, ...lines].join('<br>');
  };

  return {
    ...baseOption(layout),
    tooltip: { ...baseOption(layout).tooltip, formatter: tooltipFormatter },
    legend: legend(names, 12, selected, true),
    grid: {
      left: narrow ? 4 : 8,
      right: narrow ? 56 : 72, // the value labels at the bars' ends
      top: legendHeight(names, layout.width, 12) + 16,
      bottom: 8,
      outerBoundsMode: 'same',
      outerBoundsContain: 'axisLabel',
    },
    yAxis: {
      type: 'category',
      inverse: true, // the server's first row on top
      data: rows.map((r) => r.label),
      axisTick: { show: false },
      axisLine: { lineStyle: { color: LINE } },
      axisLabel: {
        color: TEXT,
        width: narrow ? 96 : 180,
        overflow: 'truncate',
      },
    },
    xAxis: {
      type: 'value',
      minInterval: shown === 'bytes' ? 0 : 1,
      ...(scale ? { min: 0, max: scale.max, interval: scale.interval } : {}),
      axisLabel: {
        color: MUTED,
        hideOverlap: true,
        formatter: shown === 'bytes' ? (v: number) => formatBytes(v, scale?.unit) : countFormatter(lang),
      },
      splitLine: { lineStyle: { color: LINE } },
    },
    series: BAR_METRICS.map(
      (m): BarSeriesOption => ({
        id: m,
        name: W.metric[m],
        type: 'bar',
        data: rows.map((r) => r[m]),
        barMaxWidth: 20,
        itemStyle: { color: COLOR[m], borderRadius: [0, 2, 2, 0] },
        label: {
          show: true,
          position: 'right',
          color: TEXT,
          formatter: (p: any) => fmt(p.value),
        },
      }),
    ),
  };
}

export function modalityRows(stats: Stats): BarRow[] {
  return stats.modalities.map((r) => ({ ...r, label: r.modality || '?' }));
}

export function groupRows(stats: Stats): BarRow[] {
  const W = words(stats.lang);
  return stats.groups.map((r) => ({
    ...r,
    label: r.name || r.code,
    detail: r.code && r.name ? `${W.code} ${r.code}` : undefined,
  }));
}
