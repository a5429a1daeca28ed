// The series panel: one card per series with its thumbnail and load progress.

import { t } from './i18n';
import { h } from './shell';
import { loadThumbnail } from './study';
import { showSeries } from './viewports';
import { seriesPanel, settled, state } from './viewerState';

export function renderSeriesPanel(): void {
  seriesPanel.replaceChildren();
  for (const study of state.studies) {
    if (state.studies.length > 1) {
      seriesPanel.append(
        h('div', { class: 'cf-study-head' }, [`${study.patient.studyDate} ${study.patient.studyDescription}`]),
      );
    }
    for (const s of study.series) {
      const img = h('img', { alt: '', draggable: 'false' });
      if (s.thumbUrl) img.src = s.thumbUrl;
      const bar = h('div', { class: 'cf-bar' }, [h('div', { class: 'cf-bar-fill' })]);
      const count = h('div', { class: 'cf-count' });
      const card = h('div', { class: 'cf-thumb', draggable: 'true', 'data-series': s.seriesUID, tabindex: '0' }, [
        h('div', { class: 'cf-thumb-img' }, [img, h('span', { class: 'cf-mod' }, [s.modality])]),
        h('div', { class: 'cf-thumb-text' }, [
          h('div', { class: 'cf-thumb-desc' }, [`${t('se')} ${s.number} ${s.description}`]),
          count,
          bar,
        ]),
      ]);
      const update = () => {
        const total = s.imageIds.length || s.expectedInstances;
        const done = s.loadedIds.size;
        (bar.firstChild as HTMLElement).style.width = total ? `${(100 * done) / total}%` : '0';
        count.textContent = `${done}/${total} ${t('images')}`;
        card.classList.toggle('cf-done', total > 0 && done >= total);
        card.dataset.loaded = String(done);
        card.dataset.total = String(total);
      };
      s.onProgress = [update];
      update();
      card.addEventListener('dragstart', (e) => {
        e.dataTransfer?.setData('text/x-cloudfilm-series', s.key);
      });
      card.addEventListener('click', () => void showSeries(state.active, s));
      card.addEventListener('keydown', (e) => {
        if (e.key === 'Enter') void showSeries(state.active, s);
      });
      seriesPanel.append(card);
      if (!s.thumbUrl) {
        void settled.then(() => loadThumbnail(s)).then((url) => {
          if (url) img.src = url;
        });
      }
    }
  }
  markActiveThumbs();
}

export function markActiveThumbs(): void {
  const shown = new Set(state.slots.map((s) => s.series?.key));
  seriesPanel.querySelectorAll<HTMLElement>('.cf-thumb').forEach((el, i) => {
    el.classList.toggle('cf-shown', shown.has(state.allSeries[i]?.key));
  });
}
