// Interface text: Simplified Chinese by default, English on request. The choice is kept in
// localStorage (never the token).

export type Lang = 'zh' | 'en';

const zh = {
  title: '云胶片 · 影像浏览',
  series: '序列',
  loading: '正在加载…',
  loaded: '已加载',
  images: '幅',
  layout: '布局',
  tools: '工具',
  wl: '窗宽窗位',
  zoom: '缩放',
  pan: '平移',
  magnify: '放大镜',
  scroll: '翻页',
  length: '长度',
  angle: '角度',
  rect: '矩形ROI',
  ellipse: '椭圆ROI',
  probe: 'CT值探针',
  presets: '预设',
  preset_default: '文件默认',
  preset_lung: '肺窗',
  preset_mediastinum: '纵隔窗',
  preset_bone: '骨窗',
  preset_brain: '脑窗',
  preset_abdomen: '腹部窗',
  invert: '反色',
  rotate: '旋转90°',
  flipH: '水平翻转',
  flipV: '垂直翻转',
  reset: '复位',
  cine: '电影播放',
  fps: '帧/秒',
  clear: '清除标注',
  deleteSel: '删除所选',
  export: '导出PNG',
  sync: '同步翻页',
  syncWL: '同步窗宽窗位',
  syncZoom: '同步缩放平移',
  refLines: '定位线',
  mpr: 'MPR',
  mip: 'MIP',
  vr: '三维VR',
  exitMpr: '返回二维',
  lang: 'English',
  more: '更多',
  close: '关闭',
  im: '图像',
  se: '序列',
  thick: '层厚',
  loc: '层位置',
  err_title: '无法显示影像',
  err_not_found: '未找到该检查（检查号可能有误，或已被删除）。',
  err_forbidden: '没有权限查看该检查，请重新打开分享链接或联系医院。',
  err_unauthorized: '身份验证已失效，请重新登录或重新打开链接。',
  err_network: '网络连接中断，请检查网络后重试。',
  err_no_study: '链接中没有检查号（study 参数）。',
  err_server: '服务器出错，请稍后重试。',
  err_image: '部分图像无法解码。',
  retry: '重试',
  imager_spacing: '按探测器像素间距测量',
  no_spacing: '无像素间距：测量单位为像素',
  axial: '轴位',
  coronal: '冠状位',
  sagittal: '矢状位',
  volume3d: '三维',
  keys: '快捷键',
  age_y: '岁',
  drop_here: '拖动序列到此处',
  studies: '检查',
  compare: '对比',
} as const;

export type Key = keyof typeof zh;

const en: Record<Key, string> = {
  title: 'Cloud film · Viewer',
  series: 'Series',
  loading: 'Loading…',
  loaded: 'loaded',
  images: 'img',
  layout: 'Layout',
  tools: 'Tools',
  wl: 'Window/Level',
  zoom: 'Zoom',
  pan: 'Pan',
  magnify: 'Magnifier',
  scroll: 'Scroll',
  length: 'Length',
  angle: 'Angle',
  rect: 'Rectangle ROI',
  ellipse: 'Ellipse ROI',
  probe: 'HU probe',
  presets: 'Presets',
  preset_default: 'From file',
  preset_lung: 'Lung',
  preset_mediastinum: 'Mediastinum',
  preset_bone: 'Bone',
  preset_brain: 'Brain',
  preset_abdomen: 'Abdomen',
  invert: 'Invert',
  rotate: 'Rotate 90°',
  flipH: 'Flip H',
  flipV: 'Flip V',
  reset: 'Reset',
  cine: 'Cine',
  fps: 'fps',
  clear: 'Clear annotations',
  deleteSel: 'Delete selected',
  export: 'Export PNG',
  sync: 'Sync scroll',
  syncWL: 'Sync W/L',
  syncZoom: 'Sync zoom/pan',
  refLines: 'Reference lines',
  mpr: 'MPR',
  mip: 'MIP',
  vr: '3D VR',
  exitMpr: 'Back to 2D',
  lang: '中文',
  more: 'More',
  close: 'Close',
  im: 'Im',
  se: 'Se',
  thick: 'Thick',
  loc: 'Loc',
  err_title: 'Cannot show the images',
  err_not_found: 'Study not found (the link may be wrong, or the study was deleted).',
  err_forbidden: 'You have no permission to view this study. Open the share link again or contact the hospital.',
  err_unauthorized: 'Your session has expired. Sign in again or reopen the link.',
  err_network: 'The network is down. Check your connection and try again.',
  err_no_study: 'The link names no study (study parameter).',
  err_server: 'The server failed. Please try again later.',
  err_image: 'Some images could not be decoded.',
  retry: 'Retry',
  imager_spacing: 'Measured with detector pixel spacing',
  no_spacing: 'No pixel spacing: measurements in pixels',
  axial: 'Axial',
  coronal: 'Coronal',
  sagittal: 'Sagittal',
  volume3d: '3D',
  keys: 'Keys',
  age_y: 'y',
  drop_here: 'Drop a series here',
  studies: 'Studies',
  compare: 'Compare',
};

const tables: Record<Lang, Record<Key, string>> = { zh, en };

function initialLang(): Lang {
  const q = new URLSearchParams(location.search).get('lang');
  if (q === 'en' || q === 'zh') return q;
  try {
    const saved = localStorage.getItem('cloudfilm.lang');
    if (saved === 'en' || saved === 'zh') return saved;
  } catch {
    /* storage may be blocked inside some WebViews */
  }
  return 'zh';
}

let lang: Lang = initialLang();
const listeners: Array<() => void> = [];

export function t(key: Key): string {
  return tables[lang][key];
}

export function getLang(): Lang {
  return lang;
}

export function setLang(next: Lang): void {
  lang = next;
  try {
    localStorage.setItem('cloudfilm.lang', next);
  } catch {
    /* ignore */
  }
  document.documentElement.lang = next === 'zh' ? 'zh-CN' : 'en';
  applyI18n(document.body);
  listeners.forEach((fn) => fn());
}

export function onLangChange(fn: () => void): void {
  listeners.push(fn);
}

/** Fill every element carrying data-i18n (text) or data-i18n-title (tooltip). */
export function applyI18n(root: ParentNode): void {
  root.querySelectorAll<HTMLElement>('[data-i18n]').forEach((el) => {
    el.textContent = t(el.dataset.i18n as Key);
  });
  root.querySelectorAll<HTMLElement>('[data-i18n-title]').forEach((el) => {
    const text = t(el.dataset.i18nTitle as Key);
    el.title = el.dataset.key ? `${text} (${el.dataset.key})` : text;
    el.setAttribute('aria-label', text);
  });
  document.title = t('title');
}
