// Vite build of the cloudfilm viewer. Output goes straight into the Python package
// (src/cloudfilm/static/viewer), served by cloudfilm.http.viewer at /viewer/.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';
import { defineConfig, type Plugin, transformWithEsbuild } from 'vite';

// boot.ts evaluates the main chunk only after the first image is painted; this link lets the
// browser download it meanwhile.
function prefetchMain(): Plugin {
  return {
    name: 'cloudfilm-prefetch-main',
    apply: 'build',
    transformIndexHtml: {
      order: 'post',
      handler(_html, ctx) {
        const chunk = Object.values(ctx.bundle ?? {}).find(
          (c: any) => c.type === 'chunk' && c.facadeModuleId?.endsWith('/src/main.ts'),
        ) as any;
        if (!chunk) return [];
        // Not fetched by itself: boot.ts turns it into a prefetch at the right moment.
        const tags: any[] = [
          { tag: 'link', attrs: { rel: 'alternate', 'data-cf-main': '', href: `/viewer/${chunk.fileName}` }, injectTo: 'head' },
        ];
        for (const css of chunk.viteMetadata?.importedCss ?? []) {
          tags.push({ tag: 'link', attrs: { rel: 'stylesheet', href: `/viewer/${css}` }, injectTo: 'head' });
        }
        return tags;
      },
    },
  };
}

// src/start.ts goes into index.html as an inline classic script, first thing in <head>: the
// first DICOMweb requests leave before any script file has been fetched.
function inlineStart(): Plugin {
  return {
    name: 'cloudfilm-inline-start',
    transformIndexHtml: {
      order: 'pre',
      async handler() {
        const file = join(__dirname, 'src', 'start.ts');
        const out = await transformWithEsbuild(readFileSync(file, 'utf8'), file, {
          loader: 'ts',
          minify: true,
          target: 'es2022',
        });
        return [{ tag: 'script', children: out.code.trim(), injectTo: 'head-prepend' }];
      },
    },
  };
}

// Brotli and gzip copies of every text asset and WASM file, made once at build time, so the
// server never compresses megabytes of JavaScript on a first request. Shared with
// vite.console.config.ts.
export function precompress(): Plugin {
  return {
    name: 'cloudfilm-precompress',
    apply: 'build',
    enforce: 'post',
    // After the files are written: the code is final then (preload helpers filled in).
    writeBundle(opts, bundle) {
      const dir = opts.dir!;
      for (const name of Object.keys(bundle)) {
        if (!/\.(js|css|html|wasm|svg|json)$/.test(name)) continue;
        const src = readFileSync(join(dir, name));
        if (src.length < 1024) continue;
        const br = brotliCompressSync(src, { params: { [constants.BROTLI_PARAM_QUALITY]: 9 } });
        writeFileSync(join(dir, `${name}.br`), br);
        writeFileSync(join(dir, `${name}.gz`), gzipSync(src, { level: 9 }));
      }
    },
  };
}

const dicomweb = process.env.VIEWER_DICOMWEB || 'http://127.0.0.1:8080';

export default defineConfig({
  base: '/viewer/',
  build: {
    outDir: '../src/cloudfilm/static/viewer',
    emptyOutDir: true,
    target: 'es2022',
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 6000,
    reportCompressedSize: false,
    // CF_NOMINIFY=1: readable function names in CPU profiles.
    minify: process.env.CF_NOMINIFY ? false : 'esbuild',
  },
  worker: { format: 'es' },
  plugins: [inlineStart(), prefetchMain(), precompress()],
  optimizeDeps: { exclude: ['@cornerstonejs/dicom-image-loader'], include: ['dicom-parser'] },
  server: { proxy: { '/dicom-web': dicomweb } },
  preview: { proxy: { '/dicom-web': dicomweb } },
});
