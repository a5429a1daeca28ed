// The page shell: element helpers, header and toolbar, series panel and grid containers.

import { type Key, applyI18n, onLangChange, t } from './i18n';
import { renderSeriesPanel } from './seriesPanel';
import { updateOverlay } from './overlay';
import { LAYOUTS, PRESETS, PRIMARY_TOOLS, setShell, state } from './viewerState';

export function h<K extends keyof HTMLElementTagNameMap>(
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

export function button(attrs: Record<string, string>, label: Key, icon?: string): HTMLButtonElement {
  const b = h('button', { type: 'button', 'data-i18n-title': label, ...attrs });
  if (icon) b.append(h('span', { class: 'ic', 'aria-hidden': 'true' }, [icon]));
  b.append(h('span', { class: 'lb', 'data-i18n': label }));
  return b;
}

export function buildShell(root: HTMLElement): void {
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
  const seriesPanel = h('aside', { class: 'cf-series', id: 'cf-series' }) as unknown as HTMLDivElement;
  const grid = h('section', { class: 'cf-grid layout-1x1', id: 'cf-grid' }) as unknown as HTMLDivElement;
  setShell(grid, seriesPanel);
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
