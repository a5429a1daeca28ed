// The viewer's `wadors:` image loader. Frames come from the frame pool (frames.ts: fetched in
// small workers, possibly already by boot.ts while this bundle loaded). Native greyscale frames
// arrive as the final pre-scaled pixel array and become a Cornerstone image here, with no decode
// worker round trip and no copy; other transfer syntaxes are decoded by Cornerstone's own
// decoder (createImage: WASM codecs in its workers). The images are the ones Cornerstone's
// wadors loader would make, so stacks, volumes (MPR/VR) and tools see no difference.

import { Enums, imageLoader, metaData, utilities } from '@cornerstonejs/core';
import type { Types } from '@cornerstonejs/core';
import { createImage, getImageFrame, wadors } from '@cornerstonejs/dicom-image-loader';
import { FramePool, type FrameResult, type PixelParams, pixelParams } from './frames';

let pool: FramePool | null = null;

export function framePool(): FramePool | null {
  return pool;
}

function paramsFor(imageId: string): PixelParams | undefined {
  const px = metaData.get('imagePixelModule', imageId);
  if (!px) return undefined;
  const series = metaData.get('generalSeriesModule', imageId) || {};
  if (series.modality === 'PT' || series.modality === 'RTDOSE') return undefined;
  const mlut = metaData.get('modalityLutModule', imageId) || {};
  if (mlut.modalityLUTSequence?.length) return undefined;
  return pixelParams({
    rows: px.rows,
    columns: px.columns,
    bitsAllocated: px.bitsAllocated,
    bitsStored: px.bitsStored,
    pixelRepresentation: px.pixelRepresentation,
    samplesPerPixel: px.samplesPerPixel,
    photometric: px.photometricInterpretation,
    slope: mlut.rescaleSlope,
    intercept: mlut.rescaleIntercept,
  });
}

const TYPED: Record<string, any> = { Uint8Array, Uint16Array, Int16Array, Float32Array, Uint32Array };

/** A Cornerstone image from a native frame, field for field as createImage makes it. */
function nativeImage(
  imageId: string,
  r: Extract<FrameResult, { kind: 'native' }>,
  options: any,
  start: number,
): Types.IImage {
  const frame: any = getImageFrame(imageId);
  let pixels: any = r.pixels;
  const T = TYPED[options?.targetBuffer?.type];
  if (T && !(pixels instanceof T)) pixels = new T(pixels);
  const plane = metaData.get('imagePlaneModule', imageId) || {};
  const voi = metaData.get('voiLutModule', imageId) || {};
  const mlut = metaData.get('modalityLutModule', imageId) || {};
  const calibration = metaData.get('calibrationModule', imageId) || {};
  const series = metaData.get('generalSeriesModule', imageId) || {};
  frame.pixelData = pixels;
  frame.pixelDataLength = pixels.length;
  frame.smallestPixelValue = r.min;
  frame.largestPixelValue = r.max;
  frame.decodeTimeInMS = 0;
  if (r.scaled) {
    frame.preScale = {
      enabled: true,
      scalingParameters: { rescaleSlope: r.slope, rescaleIntercept: r.intercept, modality: series.modality },
      scaled: true,
    };
  }
  const voxelManager = utilities.VoxelManager.createImageVoxelManager({
    scalarData: pixels,
    width: frame.columns,
    height: frame.rows,
    numberOfComponents: 1,
  });
  const image: any = {
    imageId,
    dataType: pixels.constructor.name,
    color: false,
    calibration,
    columnPixelSpacing: plane.columnPixelSpacing,
    columns: frame.columns,
    height: frame.rows,
    preScale: frame.preScale,
    intercept: mlut.rescaleIntercept ? mlut.rescaleIntercept : 0,
    slope: mlut.rescaleSlope ? mlut.rescaleSlope : 1,
    invert: frame.photometricInterpretation === 'MONOCHROME1',
    minPixelValue: r.min,
    maxPixelValue: r.max,
    rowPixelSpacing: plane.rowPixelSpacing,
    rows: frame.rows,
    sizeInBytes: pixels.byteLength,
    width: frame.columns,
    windowCenter: voi.windowCenter ? voi.windowCenter[0] : undefined,
    windowWidth: voi.windowWidth ? voi.windowWidth[0] : undefined,
    voiLUTFunction: (voi.voiLUTFunction?.length && voi.voiLUTFunction[0]) || voi.voiLutFunction || undefined,
    decodeTimeInMS: 0,
    floatPixelData: undefined,
    imageFrame: frame,
    voxelManager,
    rgba: false,
    getPixelData: () => frame.pixelData,
    getCanvas: undefined,
    numberOfComponents: 1,
    loadTimeInMS: performance.now() - start,
    transferSyntaxUID: r.transferSyntax,
    imageQualityStatus: Enums.ImageQualityStatus.FULL_RESOLUTION,
  };
  if (voi.voiLUTSequence?.length) image.voiLUT = voi.voiLUTSequence[0];
  if (image.windowCenter === undefined || image.windowWidth === undefined) {
    const wl = utilities.windowLevel.toWindowLevel(r.min, r.max);
    image.windowWidth = wl.windowWidth;
    image.windowCenter = wl.windowCenter;
  }
  return image as Types.IImage;
}

function sameScaling(r: Extract<FrameResult, { kind: 'native' }>, p: PixelParams | undefined): boolean {
  if (!p) return false;
  if (p.slope === undefined) return !r.scaled;
  return r.scaled && r.slope === p.slope && r.intercept === p.intercept;
}

function loadImage(imageId: string, options: any = {}): Types.IImageLoadObject {
  const tb = options?.targetBuffer;
  const params = paramsFor(imageId);
  if (!pool || (tb && ((tb.rows && tb.rows !== params?.rows) || (tb.columns && tb.columns !== params?.columns)))) {
    return wadors.loadImage(imageId, options) as Types.IImageLoadObject;
  }
  const start = performance.now();
  const url = imageId.slice('wadors:'.length);
  const priority = options.requestType === Enums.RequestType.Interaction ? 'high' : options.requestType === Enums.RequestType.Thumbnail ? 'auto' : 'low';
  const promise = pool.take(url, params, priority).then(async (r): Promise<Types.IImage> => {
    if (r.kind === 'native') {
      if (sameScaling(r, params)) return nativeImage(imageId, r, options, start);
      // Fetched with other parameters than the metadata now says (cannot happen with one
      // metadata source): let Cornerstone's loader do it from scratch.
      return (wadors.loadImage(imageId, options) as Types.IImageLoadObject).promise as Promise<Types.IImage>;
    }
    const image: any = await createImage(imageId, r.bytes, r.transferSyntax, { ...options });
    image.loadTimeInMS = performance.now() - start;
    image.transferSyntaxUID = r.transferSyntax;
    image.imageQualityStatus = Enums.ImageQualityStatus.FULL_RESOLUTION;
    return image as Types.IImage;
  });
  return { promise, cancelFn: undefined } as Types.IImageLoadObject;
}

/** Take over `wadors:` image ids (after the DICOM image loader registered its own loader). */
export function installFastLoader(existing: FramePool | undefined, headers: () => Record<string, string>, workers: number): void {
  pool = existing ?? new FramePool(workers, headers);
  imageLoader.registerImageLoader('wadors', loadImage as any);
}
