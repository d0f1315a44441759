// pgkit dashboard: polls "data" (relative, so the page works under any
// prefix) and draws it as SVG. Everything from the server is put in the page
// with textContent or setAttribute on elements built here: never as HTML.
'use strict';
(function () {
  const HISTORY = 90; // points kept per chart
  const NS = 'http://www.w3.org/2000/svg';
  const W = 340, H = 120, PL = 52, PR = 6, PT = 8, PB = 6;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svgEl(tag, attrs) {
    const e = document.createElementNS(NS, tag);
    for (const k of Object.keys(attrs)) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function num(v) { return typeof v === 'number' && isFinite(v) ? v : null; }

  function fmtNum(v) {
    if (v === null) return '–';
    if (Number.isInteger(v)) return v.toLocaleString('en-US');
    const a = Math.abs(v);
    return v.toLocaleString('en-US', { maximumFractionDigits: a < 1 ? 3 : a < 100 ? 1 : 0 });
  }
  function fmtMS(ms) {
    if (ms === null) return '–';
    if (ms >= 1000) return (ms / 1000).toFixed(2) + ' s';
    if (ms >= 100) return ms.toFixed(0) + ' ms';
    if (ms >= 10) return ms.toFixed(1) + ' ms';
    if (ms >= 0.1 || ms === 0) return ms.toFixed(2) + ' ms';
    return (ms * 1000).toFixed(ms >= 0.01 ? 0 : 1) + ' µs';
  }
  const secs = (v) => fmtMS(num(v) === null ? null : v * 1000);
  function fmtBytes(b) {
    if (b === null) return '–';
    const units = ['B', 'kB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b : Number(b.toFixed(b < 10 ? 1 : 0))) + ' ' + units[i];
  }
  function fmtPct(r) { return r === null ? '–' : (r * 100).toFixed(r < 0.1 && r > 0 ? 1 : 0) + '%'; }
  // axis writes a gridline's value short: 0, 0.05, 12.5, 2,500.
  function axis(v) { return v === 0 ? '0' : Number(v.toPrecision(3)).toLocaleString('en-US', { maximumFractionDigits: 4 }); }
  const axisMS = (v) => axis(v) + ' ms';
  const axisPct = (v) => Math.round(v * 100) + '%';

  // niceCeil rounds v up to 1, 2, 2.5 or 5 times a power of ten.
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p * 1.0000001) return m * p;
    return 10 * p;
  }

  // Chart draws some keys of a history of samples as lines.
  // series: [{key, label, color, dashed, fmt (legend)}]; opts: {axis
  // (gridline labels), fmt (legend), max (fixed top), floor (least top),
  // integer (counts: gridlines on whole numbers)}.
  class Chart {
    constructor(container, series, opts) {
      this.series = series;
      this.opts = opts || {};
      this.svg = svgEl('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'data-points': 0 });
      this.grid = svgEl('g', {});
      this.lines = svgEl('g', {});
      this.svg.append(this.grid, this.lines);
      this.legend = el('div', 'legend');
      this.values = series.map((s) => {
        const item = el('span');
        item.append(el('span', 'swatch c-' + s.color), document.createTextNode(s.label + ' '));
        const value = el('span', 'value', '–');
        item.append(value);
        this.legend.append(item);
        return value;
      });
      container.replaceChildren(this.svg, this.legend);
    }

    draw(history) {
      const fmt = this.opts.fmt || fmtNum;
      const axisFmt = this.opts.axis || axis;
      let top = 0;
      for (const h of history) for (const s of this.series) {
        const v = num(h[s.key]);
        if (v !== null && v > top) top = v;
      }
      top = Math.max(top, this.opts.floor || 0);
      if (this.opts.max !== undefined) top = this.opts.max;
      else if (this.opts.integer && top < 10) top = Math.ceil((top + 1) / 2) * 2;
      else top = niceCeil(top);
      const plotW = W - PL - PR, plotH = H - PT - PB;
      const y = (v) => PT + plotH - (Math.min(v, top) / top) * plotH;
      const x = (i) => PL + plotW * (HISTORY - history.length + i) / (HISTORY - 1);

      const grid = [];
      for (const f of [0, 0.5, 1]) {
        const gy = y(top * f);
        grid.push(svgEl('line', { x1: PL, x2: W - PR, y1: gy, y2: gy, class: f === 0 ? 'baseline' : 'gridline' }));
        const label = svgEl('text', { x: PL - 6, y: gy + 3.5, 'text-anchor': 'end', class: 'axis' });
        label.textContent = axisFmt(top * f);
        grid.push(label);
      }
      this.grid.replaceChildren(...grid);

      const lines = [];
      let points = 0;
      this.series.forEach((s, si) => {
        let run = [];
        const flush = () => {
          if (run.length > 0) {
            lines.push(svgEl('polyline', { points: run.join(' '), class: 'c-' + s.color + (s.dashed ? ' dashed' : '') }));
          }
          run = [];
        };
        let last = null;
        history.forEach((h, i) => {
          const v = num(h[s.key]);
          if (v === null) { flush(); return; }
          run.push(x(i).toFixed(1) + ',' + y(v).toFixed(1));
          if (si === 0) points++;
          last = v;
        });
        flush();
        this.values[si].textContent = (s.fmt || fmt)(last);
      });
      this.lines.replaceChildren(...lines);
      this.svg.setAttribute('data-points', points);
    }
  }

  const byId = (id) => document.getElementById(id);
  function setNow(id, main, rest) {
    const now = byId(id);
    const parts = [document.createTextNode(main)];
    if (rest) parts.push(el('span', 'unit', ' ' + rest));
    now.replaceChildren(...parts);
  }

  const ms = (v) => fmtMS(num(v));
  const charts = {
    conns: new Chart(byId('chart-conns'), [
      { key: 'acquired', label: 'acquired', color: 'blue' },
      { key: 'idle', label: 'idle', color: 'green' },
      { key: 'constructing', label: 'constructing', color: 'amber' },
      { key: 'waiting', label: 'waiting', color: 'red' },
      { key: 'max', label: 'max', color: 'gray', dashed: true },
    ], { floor: 1, integer: true }),
    util: new Chart(byId('chart-util'), [
      { key: 'util', label: 'acquired / max', color: 'violet' },
    ], { max: 1, fmt: (v) => fmtPct(num(v)), axis: axisPct }),
    wait: new Chart(byId('chart-wait'), [
      { key: 'waitAvg', label: 'average wait per acquire', color: 'pink' },
    ], { floor: 0.1, fmt: ms, axis: axisMS }),
    rate: new Chart(byId('chart-rate'), [
      { key: 'qps', label: 'queries/s', color: 'cyan' },
      { key: 'eps', label: 'errors/s', color: 'red' },
    ], { floor: 1 }),
    latency: new Chart(byId('chart-latency'), [
      { key: 'p50', label: 'p50', color: 'blue', fmt: ms },
      { key: 'p99', label: 'p99', color: 'orange', fmt: ms },
    ], { floor: 1, fmt: ms, axis: axisMS }),
  };
  const history = [];
  const sources = new Map(); // index and name -> {chart, dl, now, history, prev}
  let refreshMS = 2000;
  let slowKey = '';

  function push(list, sample) {
    list.push(sample);
    if (list.length > HISTORY) list.splice(0, list.length - HISTORY);
  }

  function update(d) {
    const p = d.pool_stats || {};
    const w = d.window || {};
    const sample = {
      acquired: num(p.acquired), idle: num(p.idle), constructing: num(p.constructing), max: num(p.max),
      util: num(p.utilization), waiting: num(p.waiting),
      waitAvg: num(w.acquire_wait_avg_seconds) === null ? (d.window ? 0 : null) : w.acquire_wait_avg_seconds * 1000,
      qps: num(w.queries_per_second), eps: num(w.errors_per_second),
      p50: num(w.p50_seconds) === null ? null : w.p50_seconds * 1000,
      p99: num(w.p99_seconds) === null ? null : w.p99_seconds * 1000,
    };
    push(history, sample);

    byId('pool-name').textContent = d.pool || '';
    document.title = 'pgkit · ' + (d.pool || 'dashboard');
    if (num(d.refresh_seconds) !== null && d.refresh_seconds > 0) refreshMS = d.refresh_seconds * 1000;

    setNow('now-conns', fmtNum(sample.acquired) + ' / ' + fmtNum(sample.max),
      'acquired · ' + fmtNum(sample.idle) + ' idle · ' + fmtNum(num(p.size)) + ' open');
    setNow('now-util', fmtPct(sample.util), 'of ' + fmtNum(sample.max) + ' connections');
    setNow('now-wait', fmtMS(sample.waitAvg),
      'avg · ' + fmtNum(sample.waiting) + ' waiting · ' + fmtNum(num(w.acquires_per_second)) + ' acquires/s');
    setNow('now-rate', fmtNum(sample.qps), 'queries/s · ' + fmtNum(sample.eps) + ' errors/s');
    setNow('now-latency', 'p50 ' + fmtMS(sample.p50), '· p99 ' + fmtMS(sample.p99));
    for (const c of Object.values(charts)) c.draw(history);

    updateSlow(d);
    updateSources(d.sources || []);
  }

  function updateSlow(d) {
    const list = Array.isArray(d.slow_queries) ? d.slow_queries : [];
    const threshold = num(d.slow_query_threshold_seconds);
    byId('slow-threshold').textContent = threshold === null ? '' : '(at least ' + fmtMS(threshold * 1000) + ', newest first)';
    const planned = list.filter((q) => q.plan).length; // plans come after their statements
    const key = list.length + '|' + planned + '|' + (list.length ? String(list[0].time) + String(list[0].sql) : '');
    if (key === slowKey) return;
    slowKey = key;
    const rows = list.slice(0, 50).map((q) => {
      const tr = el('tr');
      const t = new Date(q.time);
      tr.append(
        el('td', '', isNaN(t) ? '' : t.toLocaleTimeString('en-GB')),
        el('td', '', String(q.name || '')),
        el('td', '', String(q.op || '')),
        el('td', 'num', secs(q.duration_seconds)),
        el('td', 'num', fmtNum(num(q.rows))));
      const sql = el('td', 'sql', String(q.sql || ''));
      if (q.sqlstate) sql.append(el('span', 'badge', String(q.sqlstate)));
      tr.append(sql, el('td', 'plan', planText(q.plan)));
      return tr;
    });
    document.querySelector('#slow tbody').replaceChildren(...rows);
    byId('slow-empty').hidden = rows.length > 0;
  }

  // planText is a plan's headline: its top node and estimated cost, each
  // sequential scan of a large table, and the suggested indexes.
  function planText(p) {
    if (!p) return '';
    const parts = [String(p.top_node || '') + ', cost ' + fmtNum(num(p.cost))];
    (p.seq_scans || []).forEach((s) => {
      parts.push('Seq Scan on ' + String(s.table) + ' (' + fmtNum(num(s.table_rows)) + ' rows)' +
        (s.columns && s.columns.length ? ' by ' + s.columns.map(String).join(', ') : ''));
    });
    (p.suggestions || []).forEach((s) => {
      parts.push(String(s.sql) + (s.verified ? ' (cost ' + fmtNum(num(p.cost)) + ' → ' + fmtNum(num(s.cost_after)) + ')' : ' (unverified)'));
    });
    return parts.join('; ');
  }

  function updateSources(list) {
    list.forEach((s, i) => {
      const name = String(s.name);
      const values = s.values || {};
      const key = i + '\u0000' + name; // two sources may share a name
      let src = sources.get(key);
      if (!src) {
        const card = el('section', 'card source');
        card.dataset.source = name;
        const now = el('div', 'now', '–');
        const chartBox = el('div', 'chart');
        const dl = el('dl', 'kv');
        card.append(el('h2', '', name), now, chartBox, dl);
        byId('cards').append(card);
        const series = 'queued' in values
          ? [{ key: 'queued', label: 'queued', color: 'teal' }, { key: 'capacity', label: 'capacity', color: 'gray', dashed: true }]
          : [{ key: 'ratio', label: 'hit_ratio' in values && !('hits' in values) ? 'hit ratio' : 'hit ratio per poll', color: 'teal' }];
        const opts = 'queued' in values ? { floor: 1, integer: true } : { max: 1, fmt: (v) => fmtPct(num(v)), axis: axisPct };
        const charted = 'queued' in values || 'hit_ratio' in values || ('hits' in values && 'misses' in values);
        src = { now, dl, history: [], prev: null, queue: 'queued' in values, chart: charted ? new Chart(chartBox, series, opts) : null };
        sources.set(key, src);
      }
      const v = (k) => num(values[k]);
      const sample = { queued: v('queued'), capacity: v('capacity'), ratio: v('hit_ratio') };
      if (v('hits') !== null && v('misses') !== null) {
        // The hit ratio between two polls, which moves, unlike a ratio
        // since start.
        const errors = v('errors') || 0;
        if (src.prev) {
          const hits = v('hits') - src.prev.hits;
          const total = hits + v('misses') - src.prev.misses + errors - src.prev.errors;
          sample.ratio = total > 0 ? hits / total : null;
        } else {
          sample.ratio = null;
        }
        src.prev = { hits: v('hits'), misses: v('misses'), errors };
      }
      push(src.history, sample);
      let nowParts;
      if (src.queue) {
        nowParts = [fmtNum(sample.queued), sample.capacity === null ? 'queued' : 'queued of ' + fmtNum(sample.capacity)];
      } else if (src.prev) {
        const all = v('hits') + v('misses') + (v('errors') || 0);
        const overall = v('hit_ratio') !== null ? v('hit_ratio') : all > 0 ? v('hits') / all : null;
        nowParts = [fmtPct(sample.ratio), 'hit ratio now · ' + fmtPct(overall) + ' overall'];
      } else {
        nowParts = [fmtPct(sample.ratio), 'hit ratio'];
      }
      src.now.replaceChildren(document.createTextNode(nowParts[0]), el('span', 'unit', ' ' + nowParts[1]));
      if (src.chart) src.chart.draw(src.history);
      const items = [];
      for (const k of Object.keys(values).sort()) {
        items.push(el('dt', '', k), el('dd', '', k.includes('ratio') ? fmtPct(v(k)) : fmtNum(v(k))));
      }
      src.dl.replaceChildren(...items);
    });
  }

  // fillTable puts one row per item in table id's body, each cell made by
  // cells(item) as [className, text], and shows the table's "empty"
  // paragraph (with note as its text, when given) when there are none.
  function fillTable(id, items, cells, note) {
    const rows = items.map((it) => {
      const tr = el('tr');
      for (const [cls, text] of cells(it)) tr.append(el('td', cls, String(text)));
      return tr;
    });
    byId(id).querySelector('tbody').replaceChildren(...rows);
    byId(id).hidden = rows.length === 0;
    const empty = byId(id + '-empty');
    if (note) empty.textContent = note;
    empty.hidden = rows.length > 0;
  }

  const list = (v) => Array.isArray(v) ? v : [];

  // updateServer shows the server's own view (the "server" endpoint).
  function updateServer(d) {
    const errBox = byId('server-error');
    errBox.hidden = !d.error;
    errBox.textContent = d.error ? 'cannot read the server\'s view: ' + String(d.error) : '';
    const v = d.server;
    if (!v) return;
    const t = new Date(v.checked_at);
    const conns = list(v.connections).reduce((n, c) => n + (num(c.count) || 0), 0);
    byId('server-sub').textContent = '(' + fmtNum(conns) + ' of ' + fmtNum(num(v.max_connections)) +
      ' connections · read ' + (isNaN(t) ? '' : t.toLocaleTimeString('en-GB')) + ')';
    fillTable('server-statements', list(v.statements), (s) => [
      ['', s.name || ''], ['sql', s.query || ''], ['num', fmtNum(num(s.calls))], ['num', secs(s.mean_seconds)],
      ['num', secs(s.total_seconds)], ['num', fmtNum(num(s.rows))], ['num', fmtPct(num(s.hit_ratio))]],
    v.statements ? 'None yet.' : String(v.statements_note || 'pg_stat_statements is not available.'));
    const sessions = [];
    for (const [why, l] of [['blocked', v.blocked], ['idle in transaction', v.idle_in_transaction], ['long-running', v.long_running]]) {
      for (const s of list(l)) sessions.push([why, s]);
    }
    fillTable('server-sessions', sessions, ([why, s]) => [
      ['', why], ['num', String(s.pid)], ['', s.application || ''], ['', s.state || ''], ['num', secs(s.running_seconds)],
      ['sql', s.query || ''], ['wrap', list(s.blocked_by).map((b) => b.pid + (b.application ? ' (' + b.application + ')' : '')).join(', ')]]);
    const indexes = list(v.unused_indexes).map((i) => [i, 'never scanned'])
      .concat(list(v.duplicate_indexes).map((i) => [i, 'duplicate: ' + String(i.of) + ' serves its queries']));
    fillTable('server-indexes', indexes, ([i, finding]) => [
      ['', i.table], ['', i.index], ['num', fmtBytes(num(i.bytes))], ['wrap', finding]]);
    fillTable('server-seqscans', list(v.seq_scan_tables), (s) => [
      ['', s.table], ['num', fmtNum(num(s.rows))], ['num', fmtNum(num(s.seq_scans))],
      ['num', fmtNum(num(s.seq_rows_read))], ['num', fmtNum(num(s.index_scans))]]);
    fillTable('server-connections', list(v.connections), (c) => [
      ['', c.application || '(none)'], ['', c.state || '(none)'], ['num', fmtNum(num(c.count))]]);
  }

  function setStatus(cls, text) {
    const s = byId('status');
    s.className = 'status ' + cls;
    s.textContent = text;
  }

  // The data's URL: "data" next to the page, without the user name and
  // password of a page opened as http://user:token@host/.../ (fetch refuses
  // a URL that holds them; the browser sends the Basic credentials it keeps
  // for the page's origin by itself).
  const dataURL = new URL('data', document.baseURI);
  dataURL.username = '';
  dataURL.password = '';

  const serverURL = new URL('server', dataURL);
  async function pollServer() {
    try {
      const res = await fetch(serverURL.href, { cache: 'no-store', credentials: 'same-origin', headers: { Accept: 'application/json' } });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      updateServer(await res.json());
    } catch (e) {
      updateServer({ error: e && e.message ? e.message : String(e) });
    }
  }

  // The server's view is read every fifth poll: it costs the database a
  // few catalog reads, and DB.ServerView keeps it for 5 s anyway.
  let polls = 0;
  async function poll() {
    if (polls++ % 5 === 0) await pollServer();
    try {
      const res = await fetch(dataURL.href, { cache: 'no-store', credentials: 'same-origin', headers: { Accept: 'application/json' } });
      if (!res.ok) throw new Error('HTTP ' + res.status + (res.status === 401 ? ' (not authorized)' : ''));
      update(await res.json());
      setStatus('live', 'live · updated ' + new Date().toLocaleTimeString('en-GB') + ' · every ' + refreshMS / 1000 + ' s');
    } catch (e) {
      setStatus('error', 'cannot read data: ' + (e && e.message ? e.message : String(e)));
    }
    setTimeout(poll, refreshMS);
  }
  poll();
})();
