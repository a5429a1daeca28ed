// Vite build of the hospital console's front end (web/console/): the statistics charts
// (Apache ECharts, tree-shaken) and the console's stylesheet. Output goes into the Python
// package (src/cloudfilm/static/console) under fixed names, console.js and console.css, which
// the server's Jinja2 pages load from /console/static/. Fixed names (not content hashes)
// because the server templates name them; the server decides how long they are cached.
import { resolve } from 'node:path';
import { defineConfig } from 'vite';
import { precompress } from './vite.config';

export default defineConfig({
  base: '/console/static/',
  // No public/ copy: the console has no static assets besides the two files.
  publicDir: false,
  build: {
    outDir: '../src/cloudfilm/static/console',
    emptyOutDir: true,
    target: 'es2022',
    assetsInlineLimit: 0,
    reportCompressedSize: false,
    // ECharts' core with two chart types is ~540 kB minified (~185 kB gzip); no lazy part to split.
    chunkSizeWarningLimit: 700,
    // One ES module the page loads with <script type="module">; nothing else to preload.
    modulePreload: false,
    minify: process.env.CF_NOMINIFY ? false : 'esbuild',
    rollupOptions: {
      input: { console: resolve(__dirname, 'console/main.ts') },
      output: {
        entryFileNames: 'console.js',
        assetFileNames: '[name][extname]',
        // ECharts has no dynamic imports; should a chunk ever appear, it still works.
        chunkFileNames: 'console-[name]-[hash].js',
      },
    },
  },
  plugins: [precompress()],
});
