// The console's words and number formats. Chinese is the console's first language; the server
// says "en" in the stats JSON for English pages, and anything else means Chinese.

export type Lang = 'zh' | 'en';

export const METRICS = ['studies', 'instances', 'bytes', 'films', 'views', 'shares', 'sms'] as const;
export type Metric = (typeof METRICS)[number];

interface Words {
  metric: Record<Metric, string>;
  count: string;
  storage: string;
  noData: string;
  chart: Record<'days' | 'modalities' | 'groups', string>;
  code: string;
}

const WORDS: Record<Lang, Words> = {
  zh: {
    metric: {
      studies: '检查数',
      instances: '图像数',
      bytes: '存储量',
      films: '胶片',
      views: '查看',
      shares: '分享',
      sms: '短信',
    },
    count: '数量',
    storage: '存储量',
    noData: '暂无数据',
    chart: { days: '每日趋势', modalities: '按设备类型', groups: '按机构' },
    code: '编码',
  },
  en: {
    metric: {
      studies: 'Studies',
      instances: 'Images',
      bytes: 'Storage',
      films: 'Films',
      views: 'Views',
      shares: 'Shares',
      sms: 'SMS',
    },
    count: 'Count',
    storage: 'Storage',
    noData: 'No data',
    chart: { days: 'Daily activity', modalities: 'By modality', groups: 'By organisation' },
    code: 'Code',
  },
};

export function words(lang: Lang): Words {
  return WORDS[lang];
}

export function langOf(value: unknown): Lang {
  return value === 'en' ? 'en' : 'zh';
}

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];

/** The power of 1024 that suits a byte count (0 for B, 1 for KB, ...). */
export function byteUnit(bytes: number): number {
  let u = 0;
  let v = Math.abs(bytes);
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u;
}

/** 1536 -> "1.5 KB"; three significant figures at most, so axis labels stay short. */
export function formatBytes(bytes: number, unit = byteUnit(bytes)): string {
  if (!Number.isFinite(bytes)) return '';
  const v = bytes / 1024 ** unit;
  const digits = unit === 0 || Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  // Trailing zeros say nothing: "2 GB", not "2.00 GB".
  const text = v.toFixed(digits).replace(/\.0+$|(\.\d*?)0+$/, '$1');
  return `${text} ${UNITS[unit]}`;
}

const NUMBER: Record<Lang, Intl.NumberFormat> = {
  zh: new Intl.NumberFormat('zh-CN'),
  en: new Intl.NumberFormat('en-US'),
};

export function formatCount(n: number, lang: Lang): string {
  return Number.isFinite(n) ? NUMBER[lang].format(n) : '';
}

/**
 * A byte axis with steps in whole binary units (0, 256 MB, 512 MB, ...) instead of ECharts'
 * decimal ones, which would read 476.84 MB. Every label in the unit of the largest value.
 */
export function byteAxisScale(max: number): { max: number; interval: number; unit: number } | null {
  if (!(max > 0)) return null;
  const u = byteUnit(max);
  const unit = 1024 ** u;
  const target = max / unit / 4; // about four steps
  const pow = 10 ** Math.floor(Math.log10(target));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * pow).find((s) => s >= target) ?? 10 * pow;
  if (u === 0) step = Math.max(1, Math.round(step)); // no fractions of a byte
  const interval = step * unit;
  // The epsilon: 1.5 GB / 0.5 GB may come out as 3.0000000001 and add an empty step.
  return { max: Math.ceil(max / interval - 1e-9) * interval, interval, unit: u };
}

const HTML_ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Hospital names come from the database: our own tooltip HTML escapes them. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
}
