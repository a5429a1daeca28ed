// The hospital console's front end, loaded by every console page as /console/static/console.js.
// It renders the statistics charts of a page that embeds its figures as
//   <script type="application/json" id="cf-stats">{...}</script>
// into each <div class="cf-chart" data-chart="days|modalities|groups">. Pages without that
// script (login, lists) get the stylesheet only. window.cfCharts is the handle tests (and the
// browser console) read the charts back through.
import './console.css';
import './components.css';
import { BarChart, LineChart } from 'echarts/charts';
import { GridComponent, LegendPlainComponent, TooltipComponent } from 'echarts/components';
import * as echarts from 'echarts/core';
import { CanvasRenderer } from 'echarts/renderers';
import {
  barChartHeight,
  barsOption,
  type BarRow,
  type ChartKind,
  daysOption,
  groupRows,
  isNarrow,
  type Layout,
  legendHeight,
  modalityRows,
  type Option,
  type Stats,
} from './charts';
import { formatBytes, langOf, METRICS, words } from './format';

// Only what the three charts use, so the bundle carries no other chart types.
echarts.use([BarChart, LineChart, GridComponent, LegendPlainComponent, TooltipComponent, CanvasRenderer]);

export interface CfCharts {
  /** True once every chart of the page is set up (or there is nothing to draw). */
  ready: boolean;
  stats: Stats | null;
  charts: echarts.EChartsType[];
  getInstanceByDom: typeof echarts.getInstanceByDom;
  formatBytes: typeof formatBytes;
}

declare global {
  interface Window {
    cfCharts?: CfCharts;
  }
}

const KINDS: ChartKind[] = ['days', 'modalities', 'groups'];

function readStats(): Stats | null {
  const el = document.getElementById('cf-stats');
  if (!el) return null;
  let raw: any;
  try {
    raw = JSON.parse(el.textContent || 'null');
  } catch (e) {
    console.error('cf-stats is not valid JSON', e);
    return null;
  }
  if (!raw || typeof raw !== 'object') return null;
  const list = (v: unknown) => (Array.isArray(v) ? v : []);
  return {
    lang: langOf(raw.lang),
    title: typeof raw.title === 'string' ? raw.title : '',
    totals: raw.totals && typeof raw.totals === 'object' ? raw.totals : {},
    days: list(raw.days),
    modalities: list(raw.modalities),
    groups: list(raw.groups),
  };
}

function reducedMotion(): boolean {
  return window.matchMedia?.('(prefers-reduced-motion: reduce)').matches ?? false;
}

/** One chart element: its ECharts instance, its legend state, its resizing. */
class ChartView {
  chart: echarts.EChartsType | null = null;
  private selected: Record<string, boolean> | undefined;
  private layoutKey = '';
  private frame = 0;

  constructor(
    private el: HTMLElement,
    private kind: ChartKind,
    private stats: Stats,
  ) {
    const W = words(stats.lang);
    el.setAttribute('role', 'img');
    el.setAttribute('aria-label', [stats.title, W.chart[kind]].filter(Boolean).join(' · '));
    if (this.rowCount() === 0) {
      el.classList.add('cf-chart-empty');
      el.textContent = W.noData;
      return;
    }
    // The stylesheet gives the day chart its height; without it (a page forgot console.css)
    // ECharts would draw into 0 px.
    if (kind === 'days' && el.clientHeight < 160) el.style.height = '400px';
    if (kind !== 'days') el.style.height = `${barChartHeight(this.rowCount(), el.clientWidth, stats.lang)}px`;
    this.chart = echarts.init(el, null, { renderer: 'canvas' });
    // A tap on the legend (legendselectchanged) or a script's legend action: keep the state
    // for the next rebuild; bar charts change their value axis with the metric at once.
    for (const ev of ['legendselectchanged', 'legendselected', 'legendunselected', 'legendselectall', 'legendinverseselect']) {
      this.chart.on(ev, (p: any) => {
        this.selected = { ...p.selected };
        if (this.kind !== 'days') this.render(true);
      });
    }
    this.render(true);
    new ResizeObserver(() => this.schedule()).observe(el);
  }

  private rowCount(): number {
    if (this.kind === 'days') return this.stats.days.length;
    return this.rows().length;
  }

  private rows(): BarRow[] {
    return this.kind === 'modalities' ? modalityRows(this.stats) : groupRows(this.stats);
  }

  private layout(): Layout {
    return {
      lang: this.stats.lang,
      width: this.el.clientWidth,
      height: this.el.clientHeight,
      selected: this.selected,
      animation: !reducedMotion(),
    };
  }

  /** What changes the option (not only the canvas size) when the element is resized. */
  private keyOf(l: Layout): string {
    const W = words(l.lang);
    const names = this.kind === 'days' ? METRICS.map((m) => W.metric[m]) : [];
    return `${isNarrow(l.width)}|${legendHeight(names, l.width, isNarrow(l.width) ? 8 : 14)}|${this.kind === 'days' ? l.height : ''}`;
  }

  render(force = false): void {
    if (!this.chart) return;
    const l = this.layout();
    const key = this.keyOf(l);
    if (!force && key === this.layoutKey) return;
    this.layoutKey = key;
    const option: Option = this.kind === 'days' ? daysOption(this.stats.days, l) : barsOption(this.rows(), l);
    this.chart.setOption(option, { notMerge: true });
  }

  schedule(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      if (!this.chart) return;
      if (this.kind !== 'days') {
        const h = `${barChartHeight(this.rowCount(), this.el.clientWidth, this.stats.lang)}px`;
        if (this.el.style.height !== h) this.el.style.height = h;
      }
      this.chart.resize();
      this.render();
    });
  }
}

function boot(): void {
  const stats = readStats();
  const views: ChartView[] = [];
  if (stats) {
    for (const el of document.querySelectorAll<HTMLElement>('.cf-chart[data-chart]')) {
      const kind = el.dataset.chart as ChartKind;
      if (!KINDS.includes(kind)) continue;
      views.push(new ChartView(el, kind, stats));
    }
    // The window, too: a phone turned sideways may not resize every element first.
    window.addEventListener('resize', () => views.forEach((v) => v.schedule()));
  }
  window.cfCharts = {
    ready: true,
    stats,
    charts: views.flatMap((v) => (v.chart ? [v.chart] : [])),
    getInstanceByDom: echarts.getInstanceByDom,
    formatBytes,
  };
}

// A module script runs after parsing, but a page may also load it with async.
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
else boot();
