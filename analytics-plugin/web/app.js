// The live analytics page. Everything it shows comes from the plugin's API:
// GET /api/v1/analytics/live answers one snapshot (the other routes'
// answers, as {status, body}) as JSON, or a stream of them as server-sent
// events. The stream is read with fetch() (EventSource cannot send an
// Authorization header); when it drops, the page polls the JSON snapshot
// every few seconds and reconnects the stream with a growing delay.
// Data is always inserted as text, never as HTML.
'use strict';
(() => {
  const API = '/api/v1/analytics';
  const TOKEN_KEY = 'context-analytics-token';
  const RANGES = ['1h', '6h', '24h', '7d', '30d'];
  const POLL_MS = 5000;
  const COLORS = ['#2f6fdf', '#e8871e', '#cf222e', '#1a7f37', '#8250df'];

  // Exposed for the browser tests and for curious operators.
  const state = window.__analytics = {
    range: '1h', project: '', token: sessionStorage.getItem(TOKEN_KEY) || '',
    conn: 'connecting', snapshots: 0, events: 0, polls: 0, lastSeq: 0, readyAt: null, completeAt: null,
    sources: {}, instance: null, timings: [], projects: new Set(), charts: {}, generation: 0,
    controller: null, pollTimer: null, retryTimer: null, watchdog: null, retries: 0,
  };

  // ---------- small helpers ----------
  const $ = (sel, root = document) => root.querySelector(sel);
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') node.className = v; else if (k === 'text') node.textContent = v; else node.setAttribute(k, v);
    }
    for (const child of children.flat()) {
      if (child == null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const nf = new Intl.NumberFormat('en-US');
  const fmtInt = (n) => (n == null ? '–' : nf.format(Math.round(n)));
  function fmtNum(n, digits = 1) {
    if (n == null || !isFinite(n)) return '–';
    return n >= 100 ? nf.format(Math.round(n)) : n.toFixed(digits).replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, '');
  }
  function fmtMs(ms) {
    if (ms == null) return '–';
    if (ms >= 1000) return (ms / 1000).toFixed(2) + ' s';
    if (ms >= 100) return ms.toFixed(0) + ' ms';
    if (ms >= 10) return ms.toFixed(1) + ' ms';
    return ms.toFixed(2) + ' ms';
  }
  const fmtPct = (r) => (r == null ? '–' : (r * 100).toFixed(r >= 0.1 || r === 0 ? 1 : 2) + ' %');
  function fmtRate(perSecond, unit) {
    if (perSecond == null || !isFinite(perSecond)) return '–';
    if (perSecond === 0) return `0 ${unit}/s`;
    if (perSecond >= 1) return `${fmtNum(perSecond)} ${unit}/s`;
    if (perSecond * 60 >= 1) return `${fmtNum(perSecond * 60)} ${unit}/min`;
    return `${fmtNum(perSecond * 3600)} ${unit}/h`;
  }
  /** Short axis labels: 950, 1.2k, 3.4M. */
  function compact(n) {
    if (n == null || !isFinite(n)) return '';
    const a = Math.abs(n);
    if (a >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
    if (a >= 1e3) return `${+(n / 1e3).toFixed(1)}k`;
    return `${+n.toFixed(a < 1 ? 2 : 1)}`;
  }
  function fmtBytes(b) {
    if (b == null) return '–';
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (b >= 1000 && i < units.length - 1) { b /= 1000; i++; }
    return `${i ? b.toFixed(1) : b} ${units[i]}`;
  }
  function fmtSeconds(s) {
    if (s == null) return '–';
    if (s < 60) return `${Math.floor(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }
  function fmtStep(seconds) {
    if (seconds % 86400 === 0) return `${seconds / 86400}-day buckets`;
    if (seconds % 3600 === 0) return `${seconds / 3600}-hour buckets`;
    return `${seconds / 60}-minute buckets`;
  }
  const stat = (key, label, value, title) =>
    el('div', { class: 'stat', 'data-stat': key, title }, el('div', { class: 'v', text: value }), el('div', { class: 'k', text: label }));
  function table(head, rows) {
    return el('div', { class: 'scroll' }, el('table', null,
      el('thead', null, el('tr', null, head.map(([label, cls]) => el('th', { class: cls, text: label })))),
      el('tbody', null, rows.map((cells) => el('tr', null, cells.map(([v, cls]) => el('td', { class: cls }, v)))))));
  }
  const times = (buckets) => buckets.map((b) => Date.parse(b.time) / 1000);

  // ---------- panels ----------
  class SourceError extends Error {}
  class Computing extends Error {}
  /** The body of a source that answered 200, or a SourceError saying why not. */
  function need(name) {
    const source = state.sources[name];
    if (!source) throw new Computing('computing…');
    if (source.status !== 200) {
      const message = source.body && source.body.error ? source.body.error.message : `HTTP ${source.status}`;
      throw new SourceError(message);
    }
    return source.body;
  }

  /** A panel's parts, made once: stats, message, chart, extra. */
  function parts(name) {
    const section = $(`[data-panel="${name}"]`);
    const body = $('.body', section);
    if (!body.firstChild) {
      body.append(el('div', { class: 'stats' }), el('p', { class: 'empty', hidden: '' }),
        el('div', { class: 'chart', hidden: '' }), el('div', { class: 'extra' }));
    }
    return { section, sub: $('.sub', section), stats: $('.stats', body), msg: $('.empty', body), chart: $('.chart', body), extra: $('.extra', body) };
  }

  function render(name, fn) {
    const p = parts(name);
    try {
      const result = fn(p) || {};
      p.msg.hidden = !result.empty;
      p.msg.className = 'empty';
      p.msg.textContent = result.empty || '';
      p.section.dataset.state = result.empty ? 'empty' : 'data';
    } catch (e) {
      p.msg.hidden = false;
      if (e instanceof Computing) {
        // Nothing of another selection stays on screen.
        p.stats.replaceChildren();
        p.extra.replaceChildren();
        p.chart.hidden = true;
        if (p.sub) p.sub.textContent = '';
        p.section.dataset.state = 'loading';
        p.msg.className = 'empty';
        p.msg.textContent = `${e.message} (this range reads every event in it)`;
        return;
      }
      p.section.dataset.state = 'error';
      p.msg.className = 'empty error';
      p.msg.textContent = e instanceof SourceError ? e.message : `cannot show this panel: ${e.message}`;
      if (!(e instanceof SourceError)) console.warn(e);
    }
  }

  /** Draws (or updates) a time-series chart in a panel's chart box. */
  function chart(p, key, x, series, format, unit, show = true) {
    p.chart.hidden = !show;
    if (!show || typeof uPlot === 'undefined') return;
    const data = [x, ...series.map((s) => s.values)];
    const labels = series.map((s) => s.label).join('|');
    let c = state.charts[key];
    if (c && c.labels === labels) {
      c.plot.setData(data);
      return;
    }
    if (c) c.plot.destroy();
    const width = Math.max(200, p.chart.clientWidth || p.section.clientWidth - 32);
    const opts = {
      width, height: 180,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true } },
      axes: [{ stroke: '#5d6678' }, { stroke: '#5d6678', size: 52, label: unit, labelSize: 16, values: (u, vals) => vals.map(compact) }],
      series: [{}, ...series.map((s, i) => ({
        label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false,
        points: { show: true, size: 4 }, value: (u, v) => format(v),
      }))],
    };
    state.charts[key] = { plot: new uPlot(opts, data, p.chart), labels, box: p.chart };
  }

  function subtitle(p, doc) {
    if (p.sub && doc && doc.range) p.sub.textContent = `${fmtStep(doc.range.step_seconds)}`;
  }

  function renderAll() {
    render('latency', (p) => {
      const docs = ['latency_p50', 'latency_p95', 'latency_p99'].map(need);
      const s = docs[1].summary;
      subtitle(p, docs[1]);
      const l = s.latency_ms;
      p.stats.replaceChildren(stat('p50', 'p50', fmtMs(l.p50)), stat('p95', 'p95', fmtMs(l.p95)),
        stat('p99', 'p99', fmtMs(l.p99)), stat('avg', 'average', fmtMs(l.avg)), stat('max', 'max', fmtMs(l.max)));
      const empty = s.requests === 0;
      chart(p, 'latency', times(docs[1].buckets),
        docs.map((d, i) => ({ label: ['p50', 'p95', 'p99'][i], values: d.buckets.map((b) => b.latency_ms) })), fmtMs, 'ms', !empty);
      return { empty: empty && 'No searches in this range.' };
    });
    render('throughput', (p) => {
      const d = need('latency_p95');
      subtitle(p, d);
      const s = d.summary;
      const span = (Date.parse(d.range.to) - Date.parse(d.range.from)) / 1000;
      const step = d.range.step_seconds;
      const perMin = d.buckets.map((b) => (b.requests * 60) / step);
      p.stats.replaceChildren(stat('searches', 'searches in range', fmtInt(s.requests)),
        stat('rate', 'average rate', fmtRate(s.requests / span, 'searches')),
        stat('peak', `busiest ${fmtStep(step).replace(' buckets', '').replace('-', ' ')}`, fmtRate(Math.max(0, ...perMin) / 60, 'searches')));
      chart(p, 'throughput', times(d.buckets), [{ label: 'searches/min', values: perMin }], (v) => (v == null ? '–' : `${fmtNum(v)}/min`), 'searches/min', s.requests > 0);
      return { empty: s.requests === 0 && 'No searches in this range.' };
    });
    render('errors', (p) => {
      const d = need('latency_p95');
      subtitle(p, d);
      const s = d.summary;
      p.stats.replaceChildren(stat('error_rate', 'error rate', fmtPct(s.error_rate)), stat('errors', 'errors', fmtInt(s.errors)),
        stat('zero_rate', 'zero-result rate', fmtPct(s.zero_result_rate)), stat('zero', 'zero-result searches', fmtInt(s.zero_results)),
        stat('avg_results', 'results per search', fmtNum(s.avg_results)));
      const rate = (n, b) => (b.requests ? (100 * n) / b.requests : null);
      chart(p, 'errors', times(d.buckets), [
        { label: 'errors', values: d.buckets.map((b) => rate(b.errors, b)) },
        { label: 'zero results', values: d.buckets.map((b) => rate(b.zero_results, b)) },
      ], (v) => (v == null ? '–' : `${fmtNum(v)} %`), '% of searches', s.requests > 0);
      return { empty: s.requests === 0 && 'No searches in this range, so no error or zero-result rate.' };
    });
    render('cache', (p) => {
      const d = need('cache');
      subtitle(p, d);
      const o = d.overall;
      p.stats.replaceChildren(stat('l1', 'L1 (exact query)', fmtPct(o.l1.hit_rate)), stat('l2', 'L2 (normalized)', fmtPct(o.l2.hit_rate)),
        stat('l3', 'L3 (term postings)', fmtPct(o.l3.hit_rate)), stat('any', 'any layer', fmtPct(o.any.hit_rate)),
        stat('lookups', 'searches', fmtInt(o.any.lookups)));
      const empty = o.any.lookups === 0;
      const pct = (r) => (r == null ? null : r * 100);
      chart(p, 'cache', times(d.buckets), ['l1', 'l2', 'l3', 'any'].map((k) => ({
        label: k === 'any' ? 'any' : k.toUpperCase(), values: d.buckets.map((b) => pct(b.layers[k].hit_rate)),
      })), (v) => (v == null ? '–' : `${fmtNum(v)} %`), 'hit rate %', !empty);
      p.extra.replaceChildren(!empty && d.projects.length > 1 ? table([['project'], ['L1', 'n'], ['L2', 'n'], ['L3', 'n'], ['any', 'n']],
        d.projects.map((x) => [[x.project, 'q'], ...['l1', 'l2', 'l3', 'any'].map((k) => [fmtPct(x.layers[k].hit_rate), 'n'])])) : '');
      return { empty: empty && 'No searches in this range, so no cache lookups.' };
    });
    render('index', (p) => {
      const d = need('index');
      subtitle(p, d);
      const s = d.summary;
      const depths = (state.instance && state.instance.index_queue_depth) || [];
      const waiting = depths.reduce((a, x) => a + x.files, 0);
      p.stats.replaceChildren(stat('files', 'files indexed', fmtInt(s.files)),
        stat('throughput', 'throughput over range', fmtRate(s.files_per_second, 'files')),
        stat('errors', 'errors', `${fmtInt(s.errors)} (${fmtPct(s.error_rate)})`),
        stat('duration', 'avg time per file', fmtMs(s.duration_ms.avg)),
        stat('queue', 'queue depth (this host)', `${fmtInt(waiting)} files`, 'files waiting to be indexed, as the host last reported'));
      chart(p, 'index', times(d.buckets), [{ label: 'files/s', values: d.buckets.map((b) => b.files_per_second) }],
        (v) => (v == null ? '–' : `${fmtNum(v, 2)}/s`), 'files/s', s.files > 0);
      p.extra.replaceChildren(depths.length > 1 ? table([['project'], ['waiting', 'n']], depths.map((x) => [[x.project, 'q'], [`${fmtInt(x.files)} files`, 'n']])) : '');
      return { empty: s.files === 0 && 'No files indexed in this range.' };
    });
    render('users', (p) => {
      const d = need('usage');
      subtitle(p, d);
      const now = (state.instance && state.instance.active_users) || {};
      p.stats.replaceChildren(stat('active', 'in range', fmtInt(d.active_users)), stat('5m', 'last 5 min (this host)', fmtInt(now['5m'])),
        stat('1h', 'last hour (this host)', fmtInt(now['1h'])), stat('24h', 'last 24 h (this host)', fmtInt(now['24h'])));
      chart(p, 'users', times(d.buckets), [{ label: 'active users', values: d.buckets.map((b) => b.active_users) }],
        (v) => (v == null ? '–' : fmtNum(v)), 'users', d.active_users > 0);
      return { empty: d.active_users === 0 && 'No one searched or opened a file in this range.' };
    });
    render('top', (p) => {
      const d = need('top_queries');
      p.extra.replaceChildren(d.queries.length ? table(
        [['query'], ['searches', 'n'], ['avg latency', 'n'], ['zero results', 'n'], ['click-through', 'n']],
        d.queries.map((q) => [[q.query, 'q'], [fmtInt(q.count), 'n'], [fmtMs(q.avg_latency_ms), 'n'],
          [fmtPct(q.zero_result_rate), 'n'], [fmtPct(q.click_through_rate), 'n']])) : '');
      return { empty: !d.queries.length && 'No searches in this range.' };
    });
    render('zero', (p) => {
      const d = need('zero_queries');
      p.extra.replaceChildren(d.queries.length ? table([['query'], ['searches', 'n'], ['avg latency', 'n']],
        d.queries.map((q) => [[q.query, 'q'], [fmtInt(q.count), 'n'], [fmtMs(q.avg_latency_ms), 'n']])) : '');
      return { empty: !d.queries.length && 'No zero-result searches in this range.' };
    });
    render('code', (p) => {
      const d = need('code_health');
      const rows = d.projects.map((x) => {
        const dead = x.dead_code || { files: 0, ratio: null };
        const hot = (x.hot_spots && x.hot_spots.files) || [];
        return [[x.project, 'q'], [fmtInt(x.files_seen), 'n'], [fmtPct(x.index_coverage), 'n'],
          [`${fmtInt(dead.files)} (${fmtPct(dead.ratio)})`, 'n'],
          [hot.length ? hot.slice(0, 3).map((h) => `${h.path} ×${fmtInt(h.accesses)}`).join(', ') + (hot.length > 3 ? ` and ${hot.length - 3} more` : '') : 'none', 'q'],
          [fmtPct(x.duplication_ratio), 'n']];
      });
      p.extra.replaceChildren(rows.length ? table([['project'], ['files seen', 'n'], ['index coverage', 'n'], ['dead files', 'n'], ['hot files'], ['duplication', 'n']], rows) : '');
      return { empty: !rows.length && 'No files indexed in this range: dead code and hot files need indexed files.' };
    });
    render('health', (p) => {
      const h = need('health');
      const st = h.storage || {};
      const dropped = Object.entries(h.events.dropped || {});
      const droppedTotal = dropped.reduce((a, [, n]) => a + n, 0);
      const spool = st.spool || {};
      p.stats.replaceChildren(
        el('div', { class: 'stat', 'data-stat': 'status' }, el('div', { class: 'v' }, el('span', { class: `badge ${h.status}`, text: h.status })), el('div', { class: 'k', text: 'status' })),
        stat('queue', 'event queue', `${fmtInt(h.queue.depth)} / ${fmtInt(h.queue.capacity)}`),
        stat('written', 'events written', fmtInt(h.events.written)),
        stat('dropped', 'events dropped', fmtInt(droppedTotal), dropped.map(([k, n]) => `${k}: ${n}`).join(', ')),
        stat('spool', 'spool', `${fmtBytes(spool.bytes)} in ${fmtInt(spool.segments)} segments`),
        stat('storage', 'storage', `${st.backend || '?'} ${st.connected ? 'connected' : 'disconnected'}`),
        stat('uptime', 'uptime', fmtSeconds(h.uptime_seconds)));
      const notes = [];
      if (h.reason) notes.push(el('p', { class: 'error', text: h.reason }));
      if (st.last_error) notes.push(el('p', { class: 'error', text: `last storage error: ${st.last_error}` }));
      notes.push(el('p', { class: 'empty', text: `plugin ${h.version}, instance ${h.instance_id}, ${h.host.name} ${h.host.version}; events received: ${Object.entries(h.events.received).map(([k, n]) => `${k} ${fmtInt(n)}`).join(', ')}; dropped: ${dropped.map(([k, n]) => `${k} ${fmtInt(n)}`).join(', ')}` }));
      p.extra.replaceChildren(...notes);
    });
    // Alerts: only when the alerts route answers 200 (absent otherwise).
    const alerts = state.sources.alerts;
    const section = $('[data-panel="alerts"]');
    const present = !!(alerts && alerts.status === 200 && alerts.body && Array.isArray(alerts.body.alerts));
    section.hidden = !present;
    if (present) {
      render('alerts', (p) => {
        const list = alerts.body.alerts;
        const order = { critical: 0, error: 1, warning: 2, info: 3 };
        const sorted = [...list].sort((a, b) => (a.state === b.state ? 0 : a.state === 'firing' ? -1 : 1) || (order[a.severity] ?? 9) - (order[b.severity] ?? 9));
        p.extra.replaceChildren(sorted.length ? table([['state'], ['severity'], ['alert'], ['value', 'n'], ['threshold', 'n'], ['since'], ['acknowledged']],
          sorted.map((a) => [
            [el('span', { class: `badge ${a.state}`, text: a.state })], [el('span', { class: `badge ${a.severity}`, text: a.severity })],
            [[a.rule, (a.annotations && a.annotations.summary) ? ` — ${a.annotations.summary}` : ''].join(''), 'q'],
            [a.value == null ? '–' : fmtNum(a.value, 3), 'n'], [a.threshold == null ? '–' : fmtNum(a.threshold, 3), 'n'],
            [a.active_since ? new Date(a.active_since).toLocaleString() : '–'],
            [a.acknowledgement ? `${a.acknowledgement.by}${a.acknowledgement.comment ? ': ' + a.acknowledgement.comment : ''}` : 'no'],
          ])) : '');
        return { empty: !sorted.length && 'No alerts pending or firing.' };
      });
    }
  }

  // ---------- data in ----------
  function apply(snapshot) {
    Object.assign(state.sources, snapshot.sources);
    if (snapshot.instance) state.instance = snapshot.instance;
    state.snapshots++;
    state.lastSeq = snapshot.seq;
    state.timings.push({ seq: snapshot.seq, compute_ms: snapshot.compute_ms, partial: snapshot.partial, pending: snapshot.pending });
    learnProjects();
    renderAll();
    $('#panels').hidden = false;
    $('#login').hidden = true;
    $('#foot').textContent = `updated ${new Date(snapshot.time).toLocaleTimeString()} · computed in ${fmtNum(snapshot.compute_ms)} ms` +
      (state.instance ? ` · instance ${state.instance.instance_id}` : '');
    if (state.readyAt == null) {
      state.readyAt = performance.now();
      state.readyPanels = document.querySelectorAll('[data-panel]:not([hidden])[data-state="data"], [data-panel]:not([hidden])[data-state="empty"]').length;
      document.body.dataset.state = 'ready';
    }
    if (state.completeAt == null && !(snapshot.pending || []).length) {
      state.completeAt = performance.now();
      document.body.dataset.complete = 'true';
    }
  }

  function learnProjects() {
    const s = state.sources;
    const names = [];
    for (const key of ['cache', 'index', 'code_health']) {
      const body = s[key] && s[key].status === 200 ? s[key].body : null;
      if (body && Array.isArray(body.projects)) names.push(...body.projects.map((x) => x.project));
    }
    if (state.instance) names.push(...state.instance.index_queue_depth.map((x) => x.project));
    const select = $('#project');
    for (const name of names) {
      if (!name || state.projects.has(name)) continue;
      state.projects.add(name);
      const options = [...select.options].slice(1);
      const before = options.find((o) => o.value > name);
      select.insertBefore(el('option', { value: name, text: name }), before || null);
    }
  }

  function query(extra) {
    const q = new URLSearchParams({ timerange: state.range });
    if (state.project) q.set('project', state.project);
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return `${API}/live?${q}`;
  }
  function headers(accept) {
    const h = { Accept: accept };
    if (state.token) h.Authorization = `Bearer ${state.token}`;
    return h;
  }
  function setConn(conn, text) {
    state.conn = conn;
    const c = $('#conn');
    c.dataset.conn = conn;
    c.textContent = text;
  }
  class Unauthorized extends Error {}

  /** One JSON snapshot (the polling fallback). */
  async function poll() {
    const generation = state.generation;
    const response = await fetch(query(), { headers: headers('application/json'), cache: 'no-store' });
    if (response.status === 401) throw new Unauthorized();
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const snapshot = await response.json();
    if (generation !== state.generation) return;
    state.polls++;
    apply(snapshot);
  }

  function startPolling() {
    if (state.pollTimer) return;
    const tick = async () => {
      try {
        await poll();
        if (state.conn !== 'live') setConn('polling', 'stream down: polling every 5 s');
      } catch (e) {
        if (e instanceof Unauthorized) return needToken('The token was refused.');
        setConn('offline', `server unreachable (${e.message}); retrying`);
      }
    };
    state.pollTimer = setInterval(tick, POLL_MS);
    tick();
  }
  function stopPolling() {
    clearInterval(state.pollTimer);
    state.pollTimer = null;
  }

  /** Reads the event stream until it ends; resolves on a clean end. */
  async function stream(generation) {
    const controller = new AbortController();
    state.controller = controller;
    const interval = 5; // the longest silence; news comes about a second after it is written
    const response = await fetch(query({ interval }), { headers: headers('text/event-stream'), cache: 'no-store', signal: controller.signal });
    if (response.status === 401) throw new Unauthorized();
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    const armWatchdog = () => {
      clearTimeout(state.watchdog);
      // Silence for three intervals and more: the stream is stuck.
      state.watchdog = setTimeout(() => controller.abort(), (interval * 3 + 5) * 1000);
    };
    armWatchdog();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (!data.length) continue;
          armWatchdog();
          if (generation !== state.generation) return;
          if (event === 'snapshot') {
            state.events++;
            stopPolling();
            state.retries = 0;
            setConn('live', 'live');
            apply(JSON.parse(data.join('\n')));
          } else if (event === 'end') {
            return;
          }
        }
      }
    } finally {
      clearTimeout(state.watchdog);
    }
  }

  /** Keeps one stream open for the current selection, polling while it is down. */
  async function connect() {
    const generation = ++state.generation;
    if (state.controller) state.controller.abort();
    clearTimeout(state.retryTimer);
    while (generation === state.generation) {
      const opened = Date.now();
      try {
        await stream(generation);
        state.retries = 0; // ended by the server: reconnect at once…
        // …unless it ends as soon as it opens (a proxy closing it): no spinning.
        if (Date.now() - opened < 2000) await new Promise((resolve) => { state.retryTimer = setTimeout(resolve, 2000); });
      } catch (e) {
        if (generation !== state.generation) return;
        if (e instanceof Unauthorized) return needToken(state.token ? 'The token was refused.' : '');
        state.retries++;
        startPolling();
        const delay = Math.min(15000, 1000 * 2 ** Math.min(state.retries - 1, 4));
        setConn(state.pollTimer && state.snapshots ? 'polling' : 'offline', `stream down (${e.name === 'AbortError' ? 'timed out' : e.message}): polling, reconnecting in ${delay / 1000} s`);
        await new Promise((resolve) => { state.retryTimer = setTimeout(resolve, delay); });
      }
    }
  }

  // ---------- token ----------
  function needToken(message) {
    state.generation++;
    if (state.controller) state.controller.abort();
    stopPolling();
    $('#panels').hidden = true;
    $('#login').hidden = false;
    $('#logout').hidden = true;
    $('#login-error').textContent = message || '';
    setConn('offline', 'token needed');
    document.body.dataset.state = 'login';
    $('#token').focus();
  }

  $('#login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = $('#token').value.trim();
    if (!token) return;
    const response = await fetch(`${API}/health`, { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' }).catch(() => null);
    if (!response || response.status === 401) {
      $('#login-error').textContent = response ? 'This token was refused.' : 'The server did not answer.';
      return;
    }
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('#token').value = '';
    $('#login').hidden = true;
    $('#logout').hidden = false;
    document.body.dataset.state = 'starting';
    connect();
  });
  $('#logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = '';
    location.reload();
  });

  // ---------- selection ----------
  function selectionFromUrl() {
    const q = new URLSearchParams(location.search);
    if (RANGES.includes(q.get('range'))) state.range = q.get('range');
    state.project = q.get('project') || '';
    $('#range').value = state.range;
    if (state.project && !state.projects.has(state.project)) {
      state.projects.add(state.project);
      $('#project').append(el('option', { value: state.project, text: state.project }));
    }
    $('#project').value = state.project;
  }
  function selectionChanged() {
    state.range = $('#range').value;
    state.project = $('#project').value;
    const q = new URLSearchParams();
    q.set('range', state.range);
    if (state.project) q.set('project', state.project);
    history.replaceState(null, '', `?${q}`);
    stopPolling();
    for (const name of Object.keys(state.sources)) delete state.sources[name];
    document.querySelectorAll('[data-panel]').forEach((s) => { s.dataset.state = 'loading'; });
    setConn('connecting', 'loading…');
    connect();
  }
  $('#range').addEventListener('change', selectionChanged);
  $('#project').addEventListener('change', selectionChanged);

  window.addEventListener('resize', () => {
    for (const c of Object.values(state.charts)) {
      const width = c.box.clientWidth;
      if (width > 0) c.plot.setSize({ width, height: 180 });
    }
  });

  selectionFromUrl();
  if (state.token) $('#logout').hidden = false;
  connect();
})();
