// How long the live page takes to load, on loopback, over 30 days of data:
// from navigation start until the first snapshot is drawn (`readyAt`: every
// panel whose source answered within 250 ms) and until every panel has
// data (`completeAt`), both performance.now() readings, in Debian's
// headless Chromium, against a real context-host with the real .so whose
// SQLite database holds 30 days of history (examples/fill_history.rs).
//
//   cargo build --release -p context-analytics -p context-host
//   cargo run --release -p context-analytics --example fill_history -- --db target/page-bench/analytics.db
//   HOST_BIN=target/release/context-host PLUGIN_SO=target/release/libcontext_analytics.so \
//   WORKDIR=target/page-bench DB=target/page-bench/analytics.db node tests/browser/page-bench.mjs [--runs 7]
//
// Each range is loaded --runs times in a fresh tab (the first load of the
// run is the only one without the assets cached; the first load of a 7d or
// 30d range is the only one without the plugin's 60-second cache of the
// raw-event sources); figures are printed and written to
// $WORKDIR/page-bench.json.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { browser, drain, env, getJson, startHost, waitReady } from './lib.mjs';

const HOST_BIN = env('HOST_BIN');
const PLUGIN_SO = env('PLUGIN_SO');
const WORKDIR = env('WORKDIR');
const DB = env('DB');
const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 7;
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

const dir = path.join(WORKDIR, 'host');
fs.rmSync(dir, { recursive: true, force: true });
fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
const db = path.join(dir, 'data', 'analytics.db');
fs.copyFileSync(DB, db); // the bench's host writes to its own copy
const load = os.loadavg()[0];
const host = await startHost({
  dir, hostBin: HOST_BIN, pluginSo: PLUGIN_SO, keepData: true,
  projects: [['alpha', path.join(ROOT, 'plugin-api')], ['beta', path.join(ROOT, 'host-shim')], ['gamma', path.join(ROOT, 'sql')]],
  plugin: `[plugins.analytics.config.storage]\nurl = "sqlite://${db}"\n[plugins.analytics.config.retention]\nraw_days = 32\nminute_days = 32`,
});
let context;
try {
  await waitReady(host);
  await drain(host);
  const searches = (await getJson(`${host.base}/api/v1/analytics/search-performance?timerange=30d`)).body.summary.requests;
  console.log(`page-bench: ${host.base}, ${searches} searches in the last 30 days, load average ${load.toFixed(2)}`);
  context = await browser(dir);
  const results = {};
  for (const range of ['1h', '24h', '7d', '30d']) {
    const loads = [];
    for (let i = 0; i < RUNS; i++) {
      const page = await context.newPage();
      await page.goto(`${host.base}/analytics/?range=${range}`);
      await page.waitForSelector('body[data-complete="true"]', { timeout: 60000 });
      const m = await page.evaluate(() => ({
        ready_ms: window.__analytics.readyAt,
        complete_ms: window.__analytics.completeAt,
        first_paint_panels: window.__analytics.readyPanels,
        dom_ms: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
        compute_ms: window.__analytics.timings?.[0]?.compute_ms ?? null,
        refresh_ms: window.__analytics.timings?.[0]?.refresh_ms ?? null,
        panels: [...document.querySelectorAll('[data-panel]:not([hidden])')].filter((p) => p.dataset.state === 'data').length,
      }));
      loads.push(m);
      await page.close();
    }
    const sorted = (k) => loads.map((l) => l[k]).sort((a, b) => a - b);
    const median = (k) => sorted(k)[Math.floor(loads.length / 2)];
    results[range] = {
      runs: loads.length, ready_ms_median: median('ready_ms'), ready_ms_max: Math.max(...sorted('ready_ms')),
      complete_ms_median: median('complete_ms'), complete_ms_max: Math.max(...sorted('complete_ms')),
      first_load_complete_ms: loads[0].complete_ms, dom_ms_median: median('dom_ms'), compute_ms_median: median('compute_ms'),
      panels_with_data: Math.min(...loads.map((l) => l.panels)),
      first_paint_panels_min: Math.min(...loads.map((l) => l.first_paint_panels)), loads,
    };
    const r = results[range];
    console.log(`${range.padStart(4)}: first paint median ${r.ready_ms_median.toFixed(0)} ms (max ${r.ready_ms_max.toFixed(0)}); ` +
      `every panel median ${r.complete_ms_median.toFixed(0)} ms (max ${r.complete_ms_max.toFixed(0)}, first load ${r.first_load_complete_ms.toFixed(0)}); ` +
      `HTML+assets ${r.dom_ms_median.toFixed(0)} ms; quick part computed in ${r.compute_ms_median} ms; ` +
      `panels drawn at first paint ≥ ${r.first_paint_panels_min}, at the end ${r.panels_with_data}`);
  }
  const out = { date: new Date().toISOString(), searches_30d: searches, load_average_before: load, load_average_after: os.loadavg()[0], results };
  fs.writeFileSync(path.join(WORKDIR, 'page-bench.json'), JSON.stringify(out, null, 2));
  console.log(`load average after ${os.loadavg()[0].toFixed(2)}; figures in ${path.join(WORKDIR, 'page-bench.json')}`);
} finally {
  await context?.close();
  await host.stop();
}
