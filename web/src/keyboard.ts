// Keyboard shortcuts.

import { action, activeSlot, applyPreset, jumpTo, scrollBy } from './actions';
import { setPrimary } from './tools';
import { stackViewport } from './viewports';
import { PRESETS, PRIMARY_TOOLS } from './viewerState';

export function onKey(e: KeyboardEvent): void {
  const tgt = e.target as HTMLElement;
  if (tgt && (tgt.tagName === 'INPUT' || tgt.tagName === 'SELECT' || tgt.tagName === 'TEXTAREA')) return;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key;
  const slot = activeSlot();
  const vp = stackViewport(slot);
  switch (k) {
    case 'ArrowUp':
    case 'ArrowLeft':
      scrollBy(-1);
      break;
    case 'ArrowDown':
    case 'ArrowRight':
      scrollBy(1);
      break;
    case 'PageUp':
      scrollBy(-10);
      break;
    case 'PageDown':
      scrollBy(10);
      break;
    case 'Home':
      jumpTo(0);
      break;
    case 'End':
      if (vp) jumpTo(vp.getImageIds().length - 1);
      break;
    case ' ':
      action('cine');
      break;
    case 'Delete':
    case 'Backspace':
      action('deleteSel');
      break;
    case 'i':
      action('invert');
      break;
    case 'o':
      action('rotate');
      break;
    case 'h':
      action('flipH');
      break;
    case 'v':
      action('flipV');
      break;
    case '0':
      action('reset');
      break;
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
      applyPreset(Object.keys(PRESETS)[Number(k) - 1]);
      break;
    case '6':
      applyPreset('default');
      break;
    default: {
      const tool = Object.entries(PRIMARY_TOOLS).find(([, d]) => d.key === k.toLowerCase());
      if (!tool) return;
      setPrimary(tool[0]);
    }
  }
  e.preventDefault();
}
