// The only way the viewer reads data: DICOMweb (QIDO-RS, WADO-RS metadata/frames/thumbnail).
// Authentication: the page's cookie session (same-origin requests carry it) or an API token taken
// from the URL fragment, kept in this module's memory only and sent as a Bearer header.

export type DicomJson = Record<string, { vr: string; Value?: any[]; BulkDataURI?: string; InlineBinary?: string }>;

export class ViewerError extends Error {
  constructor(
    public kind: 'not_found' | 'forbidden' | 'unauthorized' | 'network' | 'server' | 'no_study',
    message: string,
    public status = 0,
  ) {
    super(message);
  }
}

let token: string | null = null;

export function setToken(value: string | null): void {
  token = value;
}

export function authHeaders(): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export const wadoRoot: string = (() => {
  const q = new URLSearchParams(location.search).get('wadoRoot');
  // Only same-origin roots: a query parameter must never send the token elsewhere.
  if (q && q.startsWith('/') && !q.startsWith('//')) return `${location.origin}${q.replace(/\/$/, '')}`;
  return `${location.origin}/dicom-web`;
})();

function classify(status: number, url: string): ViewerError {
  if (status === 404) return new ViewerError('not_found', `404 ${url}`, status);
  if (status === 403) return new ViewerError('forbidden', `403 ${url}`, status);
  if (status === 401) return new ViewerError('unauthorized', `401 ${url}`, status);
  return new ViewerError('server', `${status} ${url}`, status);
}

export async function getJson(path: string, accept = 'application/dicom+json'): Promise<any> {
  const url = path.startsWith('http') ? path : `${wadoRoot}${path}`;
  let res: Response;
  try {
    res = await fetch(url, { headers: { Accept: accept, ...authHeaders() }, credentials: 'same-origin' });
  } catch (e) {
    throw new ViewerError('network', String(e));
  }
  if (res.status === 204) return [];
  if (!res.ok) throw classify(res.status, url);
  const text = await res.text();
  return text ? JSON.parse(text) : [];
}

export async function getBlob(path: string, accept: string): Promise<Blob> {
  const url = `${wadoRoot}${path}`;
  let res: Response;
  try {
    res = await fetch(url, { headers: { Accept: accept, ...authHeaders() }, credentials: 'same-origin' });
  } catch (e) {
    throw new ViewerError('network', String(e));
  }
  if (!res.ok) throw classify(res.status, url);
  return res.blob();
}

export function value(ds: DicomJson | undefined, tag: string, index = 0): any {
  const el = ds?.[tag];
  if (!el || !el.Value || el.Value.length <= index) return undefined;
  return el.Value[index];
}

export function values(ds: DicomJson | undefined, tag: string): any[] | undefined {
  const el = ds?.[tag];
  return el?.Value;
}

export function numbers(ds: DicomJson | undefined, tag: string): number[] | undefined {
  const v = values(ds, tag);
  return v ? v.map((x) => Number(x)) : undefined;
}

/** A PN value as text: the ideographic form when there is one, else the alphabetic. */
export function personName(ds: DicomJson | undefined, tag: string): string {
  const v = value(ds, tag);
  if (!v) return '';
  if (typeof v === 'string') return v.replace(/\^/g, ' ').trim();
  const pick = v.Ideographic || v.Alphabetic || v.Phonetic || '';
  const alpha = v.Alphabetic && v.Ideographic ? ` (${v.Alphabetic.replace(/\^/g, ' ').trim()})` : '';
  return `${pick.replace(/\^/g, '').trim()}${alpha}`;
}

export const TAG = {
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  SOPInstanceUID: '00080018',
  SOPClassUID: '00080016',
  Modality: '00080060',
  SeriesDescription: '0008103E',
  SeriesNumber: '00200011',
  InstanceNumber: '00200013',
  NumberOfSeriesRelatedInstances: '00201209',
  NumberOfFrames: '00280008',
  ImagePositionPatient: '00200032',
  ImageOrientationPatient: '00200037',
  FrameOfReferenceUID: '00200052',
  PixelSpacing: '00280030',
  ImagerPixelSpacing: '00181164',
  SliceThickness: '00180050',
  SliceLocation: '00201041',
  PatientName: '00100010',
  PatientID: '00100020',
  PatientBirthDate: '00100030',
  PatientSex: '00100040',
  PatientAge: '00101010',
  StudyDate: '00080020',
  StudyTime: '00080030',
  StudyDescription: '00081030',
  InstitutionName: '00080080',
  WindowCenter: '00281050',
  WindowWidth: '00281051',
  PhotometricInterpretation: '00280004',
  RescaleSlope: '00281053',
  RescaleIntercept: '00281052',
  Rows: '00280010',
  Columns: '00280011',
  TransferSyntaxUID: '00020010',
  AvailableTransferSyntaxUID: '00083002',
  CineRate: '00180040',
  FrameTime: '00181063',
} as const;
