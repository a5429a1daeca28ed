// Studies and series as the viewer sees them: one QIDO request per study for the series list,
// one WADO-RS /metadata request per series, image ids sorted along the slice normal.

import { wadors } from '@cornerstonejs/dicom-image-loader';
import type { BootData } from './boot';
import { type DicomJson, TAG, ViewerError, getBlob, getJson, numbers, personName, value, wadoRoot } from './dicomweb';

export interface SeriesEntry {
  key: string; // `${studyIndex}:${seriesUID}`
  studyIndex: number;
  studyUID: string;
  seriesUID: string;
  modality: string;
  description: string;
  number: number;
  expectedInstances: number;
  instances: DicomJson[]; // sorted, one per instance
  imageIds: string[]; // one per frame, in display order
  metaByImageId: Map<string, DicomJson>;
  loadedIds: Set<string>;
  failedIds: Set<string>;
  frameOfReferenceUID?: string;
  reconstructable: boolean; // a stack of parallel slices: MPR / VR possible
  multiframe: boolean;
  fps?: number;
  metadataPromise?: Promise<void>;
  thumbUrl?: string;
  onProgress: Array<() => void>;
  loadedAt?: number; // performance.now() when every frame was decoded and cached
}

export interface StudyEntry {
  index: number;
  studyUID: string;
  series: SeriesEntry[];
  patient: PatientInfo;
}

export interface PatientInfo {
  name: string;
  id: string;
  sex: string;
  age: string;
  birthDate: string;
  studyDate: string;
  studyDescription: string;
  institution: string;
}

/** The series list fetched by boot.ts while this bundle was loading, if it answered. */
async function fromBoot(studyUID: string): Promise<DicomJson[] | undefined> {
  const boot: BootData | undefined = (window as any).__cfBoot;
  const p = boot?.seriesLists.get(studyUID);
  if (!p) return undefined;
  boot!.seriesLists.delete(studyUID);
  try {
    const res = await p;
    if (!res || !res.ok) return undefined; // fetch again: the error is classified there
    return res.status === 204 ? [] : await res.json();
  } catch {
    return undefined;
  }
}

const NON_IMAGE_MODALITIES = new Set(['SR', 'PR', 'KO', 'DOC', 'RTSTRUCT', 'SEG', 'REG', 'RWV']);

export async function loadSeriesList(studyUID: string, studyIndex: number): Promise<StudyEntry> {
  const rows: DicomJson[] = await fromBoot(studyUID) ?? await getJson(
    `/studies/${encodeURIComponent(studyUID)}/series?includefield=0008103E&includefield=00201209`,
  );
  if (!Array.isArray(rows) || rows.length === 0) {
    throw new ViewerError('not_found', `no series in ${studyUID}`, 404);
  }
  const series: SeriesEntry[] = rows
    .filter((r) => !NON_IMAGE_MODALITIES.has(value(r, TAG.Modality) ?? ''))
    .map((r) => {
      const seriesUID = value(r, TAG.SeriesInstanceUID) as string;
      return {
        key: `${studyIndex}:${seriesUID}`,
        studyIndex,
        studyUID,
        seriesUID,
        modality: value(r, TAG.Modality) ?? '',
        description: value(r, TAG.SeriesDescription) ?? '',
        number: Number(value(r, TAG.SeriesNumber) ?? 0),
        expectedInstances: Number(value(r, TAG.NumberOfSeriesRelatedInstances) ?? 0),
        instances: [],
        imageIds: [],
        metaByImageId: new Map(),
        loadedIds: new Set<string>(),
        failedIds: new Set<string>(),
        reconstructable: false,
        multiframe: false,
        onProgress: [],
      };
    })
    .sort((a, b) => a.number - b.number);
  if (series.length === 0) throw new ViewerError('not_found', `no image series in ${studyUID}`, 404);
  return {
    index: studyIndex,
    studyUID,
    series,
    patient: { name: '', id: '', sex: '', age: '', birthDate: '', studyDate: '', studyDescription: '', institution: '' },
  };
}

function dot(a: number[], b: number[]): number {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

function cross(a: number[], b: number[]): number[] {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}

/** Fetch a series' metadata (one request) and register every frame's image id. */
export function loadSeriesMetadata(entry: SeriesEntry): Promise<void> {
  if (entry.metadataPromise) return entry.metadataPromise;
  entry.metadataPromise = (async () => {
    const boot: BootData | undefined = (window as any).__cfBoot;
    const early = await boot?.firstMetadata;
    const list: DicomJson[] =
      early && early.seriesUID === entry.seriesUID && early.studyUID === entry.studyUID
        ? early.metadata
        : await getJson(
            `/studies/${encodeURIComponent(entry.studyUID)}/series/${encodeURIComponent(entry.seriesUID)}/metadata`,
          );
    const images = list.filter((ds) => ds['7FE00010'] || value(ds, TAG.Rows));
    const iop = numbers(images[0], TAG.ImageOrientationPatient);
    let normal: number[] | undefined;
    if (iop && iop.length === 6) normal = cross(iop.slice(0, 3), iop.slice(3, 6));
    const sortKey = (ds: DicomJson): number => {
      const ipp = numbers(ds, TAG.ImagePositionPatient);
      if (normal && ipp && ipp.length === 3) return dot(ipp, normal);
      return Number(value(ds, TAG.InstanceNumber) ?? 0);
    };
    const allParallel =
      !!normal &&
      images.every((ds) => {
        const o = numbers(ds, TAG.ImageOrientationPatient);
        const p = numbers(ds, TAG.ImagePositionPatient);
        return o && p && o.every((v, i) => Math.abs(v - iop![i]) < 1e-3);
      });
    if (allParallel) images.sort((a, b) => sortKey(a) - sortKey(b));
    else images.sort((a, b) => Number(value(a, TAG.InstanceNumber) ?? 0) - Number(value(b, TAG.InstanceNumber) ?? 0));
    // Display order for a stack: from the head end down (highest position along the normal first
    // for axial), as PACS do; for other orientations keep ascending.
    if (allParallel && normal && Math.abs(normal[2]) > 0.5) images.reverse();

    entry.instances = images;
    entry.imageIds = [];
    for (const ds of images) {
      const sop = value(ds, TAG.SOPInstanceUID);
      const frames = Number(value(ds, TAG.NumberOfFrames) ?? 1) || 1;
      const base = `wadors:${wadoRoot}/studies/${entry.studyUID}/series/${entry.seriesUID}/instances/${sop}/frames/`;
      wadors.metaDataManager.add(`${base}1`, ds as any);
      for (let f = 1; f <= frames; f++) {
        entry.imageIds.push(`${base}${f}`);
        entry.metaByImageId.set(`${base}${f}`, ds);
      }
      if (frames > 1) {
        entry.multiframe = true;
        const ft = Number(value(ds, TAG.FrameTime) ?? 0);
        const cr = Number(value(ds, TAG.CineRate) ?? 0);
        entry.fps = cr > 0 ? cr : ft > 0 ? Math.round(1000 / ft) : 15;
      }
    }
    entry.frameOfReferenceUID = value(images[0], TAG.FrameOfReferenceUID);
    entry.reconstructable =
      allParallel && images.length >= 3 && !entry.multiframe && ['CT', 'MR', 'PT', 'NM'].includes(entry.modality);
  })();
  entry.metadataPromise.catch(() => {
    entry.metadataPromise = undefined;
  });
  return entry.metadataPromise;
}

export function patientFrom(ds: DicomJson | undefined): PatientInfo {
  const birth = value(ds, TAG.PatientBirthDate) ?? '';
  const studyDate = value(ds, TAG.StudyDate) ?? '';
  let age = value(ds, TAG.PatientAge) ?? '';
  if (!age && birth.length === 8 && studyDate.length === 8) {
    const b = Number(birth);
    const s = Number(studyDate);
    age = `${Math.floor((s - b) / 10000)}Y`;
  }
  return {
    name: personName(ds, TAG.PatientName),
    id: value(ds, TAG.PatientID) ?? '',
    sex: value(ds, TAG.PatientSex) ?? '',
    age,
    birthDate: birth,
    studyDate,
    studyDescription: value(ds, TAG.StudyDescription) ?? '',
    institution: value(ds, TAG.InstitutionName) ?? '',
  };
}

export async function loadThumbnail(entry: SeriesEntry): Promise<string | undefined> {
  if (entry.thumbUrl) return entry.thumbUrl;
  try {
    const blob = await getBlob(
      `/studies/${entry.studyUID}/series/${entry.seriesUID}/thumbnail?viewport=96,96`,
      'image/jpeg, image/png;q=0.9, image/*;q=0.8',
    );
    if (!blob.size) return undefined;
    entry.thumbUrl = URL.createObjectURL(blob);
    return entry.thumbUrl;
  } catch {
    return undefined;
  }
}
