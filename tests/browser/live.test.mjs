// The live page in a real browser: Debian's headless Chromium (driven by
// playwright-core) against a real context-host with the real analytics .so
// over two real projects of this repository, after a real workload from
// `context-host loadgen`. Every check compares what the page shows with
// what the REST API answers for the same selection.
//
//   HOST_BIN=target/debug/context-host PLUGIN_SO=target/debug/libcontext_analytics.so \
//   WORKDIR=target/browser node --test --test-concurrency=1 tests/browser/live.test.mjs
//
// (tests/browser/run.sh does this after `npm ci`.) Screenshots of the
// loaded page are kept in $BROWSER_ARTIFACTS (default $WORKDIR/artifacts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { browser, drain, env, freePort, getJson, loadgen, sha256, sleep, startHost, waitFor, waitReady } from './lib.mjs';

const HOST_BIN = env('HOST_BIN');
const PLUGIN_SO = env('PLUGIN_SO');
const WORKDIR = env('WORKDIR');
const ARTIFACTS = process.env.BROWSER_ARTIFACTS || path.join(WORKDIR, 'artifacts');
fs.mkdirSync(ARTIFACTS, { recursive: true });

// One rule that fires as soon as anyone searches: the alerts panel shows
// a real alert of the real alerting engine.
const ALERTING = `[plugins.analytics.config.alerting]
evaluation_interval = "1s"
default_rules = false
[[plugins.analytics.config.alerting.rules]]
name = "LivePageSomeoneSearches"
measure = "active_users"
window = "5m"
op = ">"
threshold = 0.0
severity = "warning"
annotations = { summary = "someone is searching" }`;

const PANELS = ['latency', 'throughput', 'errors', 'cache', 'index', 'users', 'top', 'zero', 'code', 'health'];
const API = '/api/v1/analytics';

/** The text of one figure of a panel. */
const stat = (page, panel, key) => page.locator(`[data-panel="${panel}"] [data-stat="${key}"] .v`).innerText();
const int = (text) => Number(text.replace(/[^0-9]/g, ''));
const number = (text) => Number(text.replace(/[^0-9.]/g, ''));

/** Records console errors, page errors and failed requests of a page. */
function watch(page) {
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    // Streams the page itself aborts (selection change, reconnect) are not failures.
    if (!(r.url().includes('/live?') && /ABORTED/.test(r.failure()?.errorText || ''))) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
  return problems;
}

async function searches(host, project, query, n) {
  for (let i = 0; i < n; i++) {
    const r = await fetch(`${host.base}/api/v1/search?project=${project}&q=${encodeURIComponent(query)}`, { headers: { 'X-Context-User': `burst-${i % 3}` } });
    assert.equal(r.status, 200, `search ${i}`);
    await r.arrayBuffer();
  }
}

describe('live page, tokens off', () => {
  let host, context, page, problems;
  const dir = path.join(WORKDIR, 'open');

  before(async () => {
    fs.mkdirSync(dir, { recursive: true });
    host = await startHost({ dir, hostBin: HOST_BIN, pluginSo: PLUGIN_SO, port: await freePort(), plugin: ALERTING });
    await waitReady(host);
    // Searches over both projects, repeated failing words (zero-result
    // list), file opens (hot files), reindexing (index throughput).
    loadgen(HOST_BIN, host, ['--seconds', '6', '--connections', '2', '--zero-words', '15', '--reindex-every', '2', '--seed', '7']);
    await drain(host);
    context = await browser(dir);
    page = context.pages()[0] || (await context.newPage());
    problems = watch(page);
  });

  after(async () => {
    await context?.close();
    await host?.stop();
  });

  it('loads without console errors and shows every panel with data', async () => {
    await page.goto(`${host.base}/analytics/`);
    await page.waitForSelector('body[data-state="ready"]', { timeout: 10000 });
    for (const panel of PANELS) {
      await waitFor(`panel ${panel} to show data`, async () => (await page.getAttribute(`[data-panel="${panel}"]`, 'data-state')) === 'data', 10000);
    }
    // The alerts panel: the rule above fires; the page lists what /alerts says.
    await waitFor('the alert on the page', async () =>
      (await page.locator('[data-panel="alerts"] tbody tr').allInnerTexts()).some((t) => t.includes('LivePageSomeoneSearches') && t.includes('firing')), 10000);
    const alerts = (await getJson(`${host.base}${API}/alerts`)).body.alerts;
    assert.equal(alerts.length, 1);
    assert.equal(alerts[0].rule, 'LivePageSomeoneSearches');
    assert.equal(await page.locator('[data-panel="alerts"] tbody tr').count(), alerts.length);
    const row = () => page.locator('[data-panel="alerts"] tbody tr >> nth=0').innerText();
    assert.match(await row(), /firing\s+warning\s+LivePageSomeoneSearches — someone is searching/);
    await waitFor(`the alert's value ${alerts[0].value} on the page`, async () => (await row()).split('\t').includes(String(alerts[0].value)), 5000);

    // Values: what the page shows is what the API answers.
    const perf = (await getJson(`${host.base}${API}/search-performance?timerange=1h&aggregation=p95`)).body.summary;
    assert.ok(perf.requests > 100, `a workload was recorded (${perf.requests})`);
    assert.equal(int(await stat(page, 'throughput', 'searches')), perf.requests);
    assert.match(await stat(page, 'latency', 'p95'), /^\d+(\.\d+)? m?s$/);
    const p95 = number(await stat(page, 'latency', 'p95'));
    const apiP95 = perf.latency_ms.p95 >= 1000 ? perf.latency_ms.p95 / 1000 : perf.latency_ms.p95;
    assert.ok(Math.abs(p95 - apiP95) <= Math.max(0.01, apiP95 * 0.01), `p95 ${p95} vs API ${apiP95}`);
    assert.match(await stat(page, 'errors', 'zero_rate'), /^\d+(\.\d+)? %$/);
    assert.ok(Math.abs(number(await stat(page, 'errors', 'zero_rate')) - perf.zero_result_rate * 100) < 0.1);
    const cache = (await getJson(`${host.base}${API}/cache-performance?timerange=1h`)).body.overall;
    assert.ok(Math.abs(number(await stat(page, 'cache', 'any')) - cache.any.hit_rate * 100) < 0.1, 'cache hit rate');
    const index = (await getJson(`${host.base}${API}/index-performance?timerange=1h`)).body.summary;
    assert.ok(index.files > 0);
    assert.equal(int(await stat(page, 'index', 'files')), index.files);
    assert.match(await stat(page, 'index', 'queue'), /^\d+ files$/);
    const usage = (await getJson(`${host.base}${API}/usage?timerange=1h&limit=10`)).body;
    assert.equal(int(await stat(page, 'users', 'active')), usage.active_users);
    const top = (await getJson(`${host.base}${API}/top-queries?timerange=1h&limit=10`)).body.queries;
    assert.equal(await page.locator('[data-panel="top"] tbody tr').count(), top.length);
    assert.equal(await page.locator('[data-panel="top"] tbody tr >> nth=0 >> td >> nth=0').innerText(), top[0].query);
    const zero = (await getJson(`${host.base}${API}/top-queries?timerange=1h&limit=10&zero_results=true`)).body.queries;
    assert.ok(zero.length > 0);
    assert.equal(await page.locator('[data-panel="zero"] tbody tr >> nth=0 >> td >> nth=0').innerText(), zero[0].query);
    const code = (await getJson(`${host.base}${API}/code-health?timerange=1h&page_size=10`)).body.projects;
    assert.deepEqual(await page.locator('[data-panel="code"] tbody tr td:first-child').allInnerTexts(), code.map((p) => p.project));
    assert.equal(await stat(page, 'health', 'status'), 'ok');
    assert.equal(int(await stat(page, 'health', 'dropped')), 0);
    // Charts are drawn (uPlot canvases) in the time-series panels.
    for (const panel of ['latency', 'throughput', 'errors', 'cache', 'index', 'users']) {
      assert.equal(await page.locator(`[data-panel="${panel}"] .chart canvas`).count(), 1, `${panel} chart`);
    }
    await page.screenshot({ path: path.join(ARTIFACTS, 'live-page.png'), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await sleep(300);
    await page.screenshot({ path: path.join(ARTIFACTS, 'live-page-phone.png'), fullPage: false });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `no sideways scrolling on a phone (${overflow} px too wide)`);
    await page.setViewportSize({ width: 1366, height: 900 });
    assert.deepEqual(problems, [], 'no console errors, page errors or failed requests');
  });

  it('shows a new burst of searches within 5 seconds, without a reload', async () => {
    await page.evaluate(() => { window.__noReload = true; });
    await waitFor('the stream to be live', async () => (await page.getAttribute('#conn', 'data-conn')) === 'live', 10000);
    const before = int(await stat(page, 'throughput', 'searches'));
    const sent = Date.now();
    await searches(host, 'plugin-api', 'burst_marker_word', 40);
    await waitFor('the burst on the page', async () => int(await stat(page, 'throughput', 'searches')) >= before + 40, 5000, 50);
    const elapsed = Date.now() - sent;
    assert.ok(elapsed < 5000, `burst shown after ${elapsed} ms`);
    assert.equal(await page.evaluate(() => window.__noReload), true, 'same page, no reload');
    console.log(`burst of 40 searches shown after ${elapsed} ms`);
  });

  it('project filter and range picker change what is shown', async () => {
    const all = int(await stat(page, 'throughput', 'searches'));
    const one = (await getJson(`${host.base}${API}/search-performance?timerange=1h&project=host-shim`)).body.summary.requests;
    assert.ok(one > 0 && one < all, `host-shim has some but not all searches (${one} of ${all})`);
    await page.selectOption('#project', 'host-shim');
    await waitFor('the host-shim figures', async () => int(await stat(page, 'throughput', 'searches')) === one, 5000);
    await waitFor('the host-shim code health', async () =>
      JSON.stringify(await page.locator('[data-panel="code"] tbody tr td:first-child').allInnerTexts()) === '["host-shim"]', 5000);
    const topOne = (await getJson(`${host.base}${API}/top-queries?timerange=1h&limit=10&project=host-shim`)).body.queries;
    await waitFor('the host-shim top queries', async () =>
      (await page.locator('[data-panel="top"] tbody tr >> nth=0 >> td >> nth=0').innerText()) === topOne[0].query, 5000);
    assert.match(page.url(), /project=host-shim/);

    assert.equal(await page.locator('[data-panel="latency"] .sub').innerText(), '1-minute buckets');
    const rate1h = await stat(page, 'throughput', 'rate');
    await page.selectOption('#range', '30d');
    await waitFor('30-day buckets', async () => (await page.locator('[data-panel="latency"] .sub').innerText()) === '6-hour buckets', 5000);
    const perf30 = (await getJson(`${host.base}${API}/search-performance?timerange=30d&project=host-shim`)).body;
    await waitFor('the 30-day figures', async () => int(await stat(page, 'throughput', 'searches')) === perf30.summary.requests, 5000);
    const rate30d = await stat(page, 'throughput', 'rate');
    assert.notEqual(rate30d, rate1h, 'the average rate is over the chosen range');
    // The 30-day rate is the same searches over 30 days (and a bit).
    const span = (Date.parse(perf30.range.to) - Date.parse(perf30.range.from)) / 1000;
    const expected = (perf30.summary.requests / span) * 3600;
    assert.ok(Math.abs(number(rate30d) - expected) <= 0.06 + expected * 0.01, `30-day rate ${rate30d} vs ${expected.toFixed(2)}/h`);
    assert.match(page.url(), /range=30d/);

    await page.selectOption('#project', '');
    await page.selectOption('#range', '1h');
    await waitFor('all projects again', async () => int(await stat(page, 'throughput', 'searches')) === all, 5000);
  });

  it('keeps working when the stream drops: polls, then reconnects on its own', async () => {
    // Every stream request fails from now on; the JSON snapshot still answers.
    const isStream = (url) => url.pathname === `${API}/live` && url.searchParams.has('interval');
    await page.route(isStream, (route) => route.abort('connectionreset'));
    await page.evaluate(() => window.__analytics.controller.abort());
    await waitFor('polling', async () => (await page.getAttribute('#conn', 'data-conn')) === 'polling', 10000);
    const before = int(await stat(page, 'throughput', 'searches'));
    const polls = await page.evaluate(() => window.__analytics.polls);
    await searches(host, 'host-shim', 'while_polling_word', 10);
    // A poll every 5 s; under load a rollup refresh may wait for the next one.
    await waitFor('the searches, by polling', async () => int(await stat(page, 'throughput', 'searches')) >= before + 10, 15000);
    assert.ok((await page.evaluate(() => window.__analytics.polls)) > polls, 'polled');
    await page.unroute(isStream);
    await waitFor('the stream back', async () => (await page.getAttribute('#conn', 'data-conn')) === 'live', 20000);

    // The host itself goes away and comes back on the same port.
    const port = new URL(host.base).port;
    await host.stop();
    await waitFor('offline', async () => (await page.getAttribute('#conn', 'data-conn')) !== 'live', 15000);
    host = await startHost({ dir, hostBin: HOST_BIN, pluginSo: PLUGIN_SO, port: Number(port), keepData: true });
    await waitFor('live again after the restart', async () => (await page.getAttribute('#conn', 'data-conn')) === 'live', 30000);
    const events = await page.evaluate(() => window.__analytics.events);
    await waitFor('new events', async () => (await page.evaluate(() => window.__analytics.events)) > events, 10000);
  });
});

describe('live page, tokens on', () => {
  let host, context;
  const dir = path.join(WORKDIR, 'auth');
  const TOKEN = 'browser-viewer-token';

  before(async () => {
    fs.mkdirSync(dir, { recursive: true });
    host = await startHost({
      dir, hostBin: HOST_BIN, pluginSo: PLUGIN_SO,
      // Alerting switched off here: its route answers 404, so no alerts panel.
      plugin: `[plugins.analytics.config.auth]\ntokens = [{ name = "browser", role = "viewer", sha256 = "${sha256(TOKEN)}" }]\n` +
        '[plugins.analytics.config.alerting]\nenabled = false',
    });
    await waitReady(host, TOKEN);
    await searches(host, 'plugin-api', 'needle', 5);
    await drain(host, TOKEN);
    context = await browser(dir);
  });

  after(async () => {
    await context?.close();
    await host?.stop();
  });

  it('without a token: a login prompt and 401s, no data', async () => {
    const page = context.pages()[0] || (await context.newPage());
    const statuses = [];
    page.on('response', (r) => { if (r.url().includes(API)) statuses.push(r.status()); });
    await page.goto(`${host.base}/analytics/`);
    await page.waitForSelector('body[data-state="login"]', { timeout: 10000 });
    assert.equal(await page.isVisible('#login'), true);
    assert.equal(await page.isHidden('#panels'), true);
    assert.ok(statuses.length > 0 && statuses.every((s) => s === 401), `API answers were ${statuses}`);
    assert.equal(await page.locator('[data-stat]').count(), 0, 'no figure rendered');
    // Straight to the data routes: 401 without a token, whatever the Accept.
    assert.equal((await getJson(`${host.base}${API}/live?timerange=1h`)).status, 401);
    const stream = await fetch(`${host.base}${API}/live`, { headers: { Accept: 'text/event-stream' } });
    assert.equal(stream.status, 401);
    assert.equal((await getJson(`${host.base}${API}/live`, 'wrong')).status, 401);

    await page.fill('#token', 'not-the-token');
    await page.click('#login button[type="submit"]');
    await waitFor('refusal', async () => (await page.innerText('#login-error')).includes('refused'), 5000);
    assert.equal(await page.isHidden('#panels'), true);

    await page.fill('#token', TOKEN);
    await page.click('#login button[type="submit"]');
    await page.waitForSelector('body[data-state="ready"]', { timeout: 10000 });
    assert.equal(int(await stat(page, 'throughput', 'searches')), 5);
    assert.equal((await getJson(`${host.base}${API}/alerts`, TOKEN)).status, 404);
    assert.equal(await page.isHidden('#p-alerts'), true, 'no alerts panel while /alerts is not 200');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('context-analytics-token')), TOKEN);
    await page.screenshot({ path: path.join(ARTIFACTS, 'live-page-token.png') });
  });
});
