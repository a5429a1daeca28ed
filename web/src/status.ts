// Status line.

import { t } from './i18n';
import { setFocus } from './loader';
import { networkDown } from './network';
import { updateOverlay } from './overlay';
import { stackViewport } from './viewports';
import { state } from './viewerState';

// Two parts: the network message, shown for as long as the network (or the server) is
// unreachable, and a passing message (an image that did not decode, …) hidden after 6 s. Both
// follow the language switch.

let statusTimer = 0;
let passing: (() => string) | null = null;

export function renderStatus(): void {
  const el = document.getElementById('cf-status');
  if (!el) return;
  const parts: string[] = [];
  if (networkDown()) parts.push(t('err_network'));
  if (passing) {
    const text = passing();
    if (!parts.includes(text)) parts.push(text);
  }
  if (parts.length) el.textContent = parts.join(' ');
  el.classList.toggle('show', parts.length > 0);
}

export function showStatus(text: string | (() => string)): void {
  passing = typeof text === 'string' ? () => text : text;
  clearTimeout(statusTimer);
  statusTimer = window.setTimeout(() => {
    passing = null;
    renderStatus();
  }, 6000);
  renderStatus();
}

/** A load of `failedId` failed: a stack viewport that was switching to it still shows its
 * previous image (Cornerstone has already made the failed slice its current index), so go back
 * to the slice on screen; overlay, slider, test hook and the next scroll then agree with the
 * pixels. */
export function keepShownSlice(failedId: string): void {
  for (const slot of state.slots) {
    const vp = stackViewport(slot);
    if (!vp || vp.getCurrentImageId() !== failedId) continue;
    const shown = vp.getCornerstoneImage()?.imageId;
    const i = shown && shown !== failedId ? vp.getImageIds().indexOf(shown) : -1;
    if (i < 0) continue;
    (vp as any).currentImageIdIndex = i;
    (vp as any).targetImageIdIndex = i;
    slot.slider.value = String(i);
    if (slot.series && slot.index === state.active) setFocus(slot.series, i);
    vp.render();
    updateOverlay(slot);
  }
}
