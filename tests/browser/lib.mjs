// Shared by the browser tests and the page-load benchmark: a real
// context-host process with the real analytics .so, its workload, and
// Debian's Chromium driven by playwright-core.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (tests/browser/run.sh sets it)`);
  return path.resolve(value);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
export const sha256 = (text) => createHash('sha256').update(text).digest('hex');

export async function waitFor(what, fn, timeoutMs = 30000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    await sleep(everyMs);
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

/**
 * Starts `context-host serve` in `dir` (config, data, plugins and log there)
 * over two real projects of this repository. `plugin` is extra TOML for
 * `[plugins.analytics.config]`; `keepData` reuses `dir/data`.
 */
export async function startHost({ dir, hostBin, pluginSo, port = 0, plugin = '', keepData = false, projects }) {
  fs.mkdirSync(path.join(dir, 'plugins'), { recursive: true });
  if (!keepData) fs.rmSync(path.join(dir, 'data'), { recursive: true, force: true });
  fs.copyFileSync(pluginSo, path.join(dir, 'plugins', path.basename(pluginSo)));
  projects = projects || [['plugin-api', path.join(ROOT, 'plugin-api')], ['host-shim', path.join(ROOT, 'host-shim')]];
  const toml = [
    '[server]', `listen = "127.0.0.1:${port}"`, 'data_dir = "data"', 'snapshot_interval_secs = 2', '',
    '[plugins]', 'dir = "plugins"', '', '[plugins.analytics]', 'enabled = true', '',
    '[plugins.analytics.config]', plugin, '',
    ...projects.flatMap(([name, p]) => ['[[projects]]', `name = "${name}"`, `path = "${p}"`, '']),
  ].join('\n');
  fs.writeFileSync(path.join(dir, 'host.toml'), toml);
  const logPath = path.join(dir, 'host.log');
  const logStart = fs.existsSync(logPath) ? fs.statSync(logPath).size : 0;
  const log = fs.openSync(logPath, 'a');
  const child = spawn(hostBin, ['serve', '--config', path.join(dir, 'host.toml')], {
    cwd: dir, env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' }, stdio: ['ignore', log, log],
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const base = await waitFor('the host to listen', () => {
    if (child.exitCode !== null) throw new Error(`context-host exited: ${fs.readFileSync(logPath, 'utf8').slice(-2000)}`);
    const m = fs.readFileSync(logPath).subarray(logStart).toString('utf8').match(/listening on (http:\/\/127\.0\.0\.1:\d+)/g);
    return m && m[m.length - 1].replace('listening on ', '');
  }, 60000);
  const host = {
    base, child, dir, exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
        await exited;
        clearTimeout(timer);
      }
      fs.closeSync(log);
    },
  };
  return host;
}

export async function getJson(url, token) {
  const response = await fetch(url, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, body, text };
}

/** Waits until the projects are indexed and the plugin's storage is up. */
export async function waitReady(host, token) {
  await waitFor('storage connected', async () => (await getJson(`${host.base}/api/v1/analytics/health`, token)).body?.storage?.connected, 60000);
  await waitFor('projects indexed', async () => (await getJson(`${host.base}/healthz`)).body?.ready, 120000);
}

/** Waits until every event the plugin received is written. */
export async function drain(host, token) {
  let last = -1;
  await waitFor('the plugin to write every event', async () => {
    const h = (await getJson(`${host.base}/api/v1/analytics/health`, token)).body;
    const received = Object.values(h.events.received).reduce((a, n) => a + n, 0);
    const done = h.queue.depth === 0 && h.events.written === received && h.events.written === last;
    last = h.events.written;
    return done;
  }, 60000, 700);
}

/** `context-host loadgen` against the host: a bounded real workload. */
export function loadgen(hostBin, host, args) {
  const run = spawnSync(hostBin, ['loadgen', '--url', host.base, '--json', ...args], { encoding: 'utf8', timeout: 180000 });
  if (run.status !== 0) throw new Error(`loadgen failed (${run.status}): ${run.stderr}`);
  return JSON.parse(run.stdout);
}

/** Debian's Chromium, headless, with a fresh profile under `dir`. */
export async function browser(dir) {
  const profile = path.join(dir, `chromium-profile-${process.pid}-${Date.now()}`);
  fs.rmSync(profile, { recursive: true, force: true });
  fs.mkdirSync(profile, { recursive: true });
  return chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1366, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
