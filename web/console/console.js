// livefuse war room: the operator console. No framework, nothing loaded
// from elsewhere. The token is asked once and kept in sessionStorage; it
// travels as a bearer header, also on the push channel, which is read
// with fetch streaming (EventSource cannot send headers).
'use strict';

(function () {
  const TOKEN_KEY = 'livefuse.console.token';
  const $ = (s, el) => (el || document).querySelector(s);
  const $$ = (s, el) => Array.from((el || document).querySelectorAll(s));
  const esc = (v) => String(v == null ? '' : v).replace(/[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  const num = (x) => (typeof x !== 'number' || !isFinite(x) ? esc(x) : String(Number(x.toPrecision(4))));
  const pct = (x) => (x == null || isNaN(x) ? 'N/A' : (x * 100).toFixed(1) + ' %');
  const ago = (t) => {
    if (!t) return '';
    const s = Math.round((Date.now() - Date.parse(t)) / 1000);
    return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : new Date(t).toLocaleString();
  };

  // What the page shows and measures. __lf.marks records when each card
  // took a state (for the event-to-card latency measurement), bounded.
  const state = { token: '', role: '', name: '', view: 'streams', streams: null, cdnHist: {}, plans: null, alerts: null };
  const lf = (window.__lf = { marks: [], events: 0, bytes: 0, renders: 0, renderMs: 0, gaps: [], lags: [], lastStreams: 0, connected: false });
  const mark = (key, what) => {
    lf.marks.push({ key, what, t: Date.now() });
    if (lf.marks.length > 20000) lf.marks.splice(0, 5000);
  };

  // ---- API ----
  async function api(method, path, body) {
    const opts = { method, headers: { Authorization: 'Bearer ' + state.token } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(path, opts);
    if (resp.status === 401) { logout('token refused'); throw new Error('token refused'); }
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!resp.ok) {
      const err = new Error((data && data.error) || resp.status + ' ' + resp.statusText);
      err.status = resp.status;
      throw err;
    }
    return data;
  }
  const canOperate = () => state.role === 'operator' || state.role === 'admin';

  // ---- login ----
  function logout(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = '';
    if (stream.abort) stream.abort.abort();
    if ($('#confirm').open) closeConfirm();
    $('#main').hidden = true;
    $('#login').hidden = false;
    $('#login-error').textContent = why || '';
  }
  async function login(tok) {
    state.token = tok;
    try {
      const me = await api('GET', '/api/v1/whoami');
      state.role = me.role; state.name = me.name;
    } catch (e) {
      if (state.token) logout(e.message);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, tok);
    document.body.dataset.role = state.role;
    $('#who-name').textContent = state.name;
    $('#who-role').textContent = state.role;
    $('#login').hidden = true;
    $('#main').hidden = false;
    connect();
    loadPlans();
    loadAlerts();
  }

  // ---- push channel (server-sent events over fetch) ----
  const stream = { abort: null, backoff: 500 };
  const handlers = {};
  async function connect() {
    if (stream.abort) stream.abort.abort();
    const ctl = new AbortController();
    stream.abort = ctl;
    try {
      const resp = await fetch('/api/v1/events', { headers: { Authorization: 'Bearer ' + state.token }, signal: ctl.signal });
      if (resp.status === 401) { logout('token refused'); return; }
      if (!resp.ok || !resp.body) throw new Error('events: ' + resp.status);
      setConn(true);
      stream.backoff = 500;
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          dispatch(block);
        }
        if (buf.length > 64 << 20) throw new Error('event too large');
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    setConn(false);
    if (state.token && stream.abort === ctl) {
      setTimeout(() => { if (stream.abort === ctl) connect(); }, stream.backoff);
      stream.backoff = Math.min(stream.backoff * 2, 10000);
    }
  }
  function dispatch(block) {
    let ev = 'message', data = '', id = 0;
    for (const line of block.split('\n')) {
      if (line.startsWith('id: ')) id = Number(line.slice(4));
      else if (line.startsWith('event: ')) ev = line.slice(7);
      else if (line.startsWith('data: ')) data += line.slice(6);
    }
    if (!data || !handlers[ev]) return;
    let v;
    try { v = JSON.parse(data); } catch (e) { return; }
    lf.events++;
    lf.bytes += data.length;
    const t0 = Date.now();
    handlers[ev](v);
    if (id && ev === 'streams') {
      // How long after the server sampled it the view was drawn, and how
      // much of that was drawing.
      lf.lags.push({ transit: t0 - id, drawn: Date.now() - id });
      if (lf.lags.length > 5000) lf.lags.shift();
    }
  }
  function setConn(up) {
    lf.connected = up;
    const c = $('#conn');
    c.textContent = up ? 'live' : 'reconnecting';
    c.className = up ? 'up' : 'down';
  }

  // ---- streams ----
  // judge decides a feed card's colours: the one place thresholds apply
  // (the console's own config today; alert rules may take over).
  function judge(feed, th) {
    const na = !feed || feed.state !== 'live'; // offline, connecting, stalled: nothing arrives
    if (na) return { na: true, fpsLow: false, bitrateLow: false };
    const fpsLow = th && th.min_fps > 0 && feed.fps < th.min_fps;
    const bitrateLow = th && th.min_bitrate_kbps > 0 && feed.bitrate_kbps < th.min_bitrate_kbps;
    return { na: false, fpsLow: !!fpsLow, bitrateLow: !!bitrateLow };
  }
  function feedCard(s, u, f, th) {
    const j = judge(f, th);
    const key = s.stream + '|' + u.unit + '|' + f.feed;
    const cls = ['card', j.na ? 'na' : (j.fpsLow || j.bitrateLow) ? 'low' : 'ok', f.active ? 'active' : ''].join(' ');
    const fps = j.na ? 'N/A' : f.fps.toFixed(f.fps >= 10 ? 0 : 1) + ' fps';
    const br = j.na ? 'N/A' : Math.round(f.bitrate_kbps) + ' kbps';
    const res = !j.na && f.width ? f.width + '×' + f.height : '';
    const extra = [];
    if (!j.na && f.keyframe_interval_ms) extra.push('GOP ' + (f.keyframe_interval_ms / 1000).toFixed(1) + ' s');
    if (!j.na && f.rtt_ms) extra.push('RTT ' + f.rtt_ms + ' ms');
    if (f.state === 'stalled') extra.push('stalled ' + Math.round(f.last_packet_age_ms / 1000) + ' s');
    return `<div class="${cls}" data-key="${esc(key)}" data-stream="${esc(s.stream)}" data-unit="${esc(u.unit)}" data-feed="${esc(f.feed)}" data-state="${esc(f.state)}">` +
      `<div class="feed">${esc(f.feed)}${f.active ? ' <b>on air</b>' : ''} <span class="proto">${esc(f.protocol || '')}</span></div>` +
      `<div class="fps${j.fpsLow ? ' low' : ''}">${fps}</div>` +
      `<div class="bitrate${j.na ? '' : j.bitrateLow ? ' low' : ' ok'}">${br}</div>` +
      `<div class="meta">${esc(res)} ${esc(extra.join(' · '))}</div></div>`;
  }
  function unitBlock(s, u, th) {
    const info = [];
    info.push('shown: <b>' + esc(u.active) + '</b>' + (u.policy && u.policy !== 'auto' ? ' (forced ' + esc(u.policy) + ')' : ''));
    if (u.last_switch) info.push('last switch ' + esc(ago(u.last_switch)) + (u.last_reason ? ': ' + esc(u.last_reason) : ''));
    if (u.viewers) info.push('viewers ' + Object.keys(u.viewers).sort().map((p) => esc(p) + ' ' + u.viewers[p]).join(', '));
    if (u.transcode) info.push('transcode ' + esc(u.transcode.profile) + ' <span class="ts-' + esc(u.transcode.state) + '">' + esc(u.transcode.state) + '</span>' +
      (u.transcode.restarts ? ' (' + u.transcode.restarts + ' restarts)' : '') + (u.transcode.reason ? ': ' + esc(u.transcode.reason) : ''));
    if (u.renditions) info.push('renditions ' + u.renditions.map((r) => esc(r.name) + (r.height ? ' ' + r.height + 'p' : '') + ' ' + Math.round(r.bitrate_kbps) + ' kbps').join(', '));
    if (u.recording) info.push('recording <span class="rec-' + esc(u.recording.state) + '">' + esc(u.recording.state) + '</span>' +
      (u.recording.pending ? ' (' + u.recording.pending + ' pending)' : '') + (u.recording.error ? ': ' + esc(u.recording.error) : ''));
    const feeds = (u.feeds || []).map((f) => feedCard(s, u, f, th)).join('');
    return `<div class="unit" data-unit="${esc(u.unit)}"><div class="unit-head">unit <b>${esc(u.unit)}</b>${u.local ? '' : ' <span class="note">(reported ' + esc(ago(u.reported_at)) + ')</span>'}</div>` +
      `<div class="unit-info">${info.join(' · ')}</div><div class="cards">${feeds}</div></div>`;
  }
  const cardState = new Map();
  // The streams event is keyed: the whole view first, then the streams
  // that changed (set), those gone (del) and the order when it changed.
  // Only the streams in set are drawn again.
  const sv = { head: null, items: new Map(), order: [] };
  handlers.streams = (v) => {
    const t0 = performance.now();
    if (lf.lastStreams) { lf.gaps.push(Date.now() - lf.lastStreams); if (lf.gaps.length > 2000) lf.gaps.shift(); }
    lf.lastStreams = Date.now();
    const headChanged = v.full || JSON.stringify(v.head) !== JSON.stringify(sv.head);
    if (v.full) sv.items.clear();
    sv.head = v.head;
    const dirty = headChanged ? null : new Set(Object.keys(v.set || {}));
    for (const [k, item] of Object.entries(v.set || {})) sv.items.set(k, item);
    for (const k of v.del || []) sv.items.delete(k);
    if (v.order) sv.order = v.order;
    state.streams = sv;
    const th = (sv.head && sv.head.thresholds) || {};
    $('#th').textContent = th.min_fps + ' fps / ' + th.min_bitrate_kbps + ' kbps';
    const root = $('#streams');
    for (const k of v.del || []) {
      const el = streamEls.get(k);
      if (el) { el.remove(); streamEls.delete(k); }
    }
    if (v.full) {
      for (const [k, el] of streamEls) if (!sv.items.has(k)) { el.remove(); streamEls.delete(k); }
    }
    for (const k of dirty || sv.order) {
      const s = sv.items.get(k);
      if (!s) continue;
      let el = streamEls.get(k);
      if (!el) {
        el = document.createElement('section');
        el.className = 'stream';
        el.dataset.stream = k;
        streamEls.set(k, el);
        root.appendChild(el);
      }
      drawStream(el, s, th);
    }
    if (v.order || v.full) {
      // Put the sections in order (moves only those out of place).
      let prev = null;
      for (const k of sv.order) {
        const el = streamEls.get(k);
        if (!el) continue;
        if ((prev ? prev.nextSibling : root.firstChild) !== el) root.insertBefore(el, prev ? prev.nextSibling : root.firstChild);
        prev = el;
      }
    }
    applyFilter();
    lf.renderMs += performance.now() - t0;
    lf.renders++;
  };
  function drawStream(el, s, th) {
    const units = s.units.length ? s.units.map((u) => unitBlock(s, u, th)).join('')
      : `<div class="unit"><div class="cards"><div class="card na" data-key="${esc(s.stream)}||" data-stream="${esc(s.stream)}" data-unit="" data-feed="" data-state="offline"><div class="feed">not on air</div><div class="fps">N/A</div><div class="bitrate">N/A</div></div></div></div>`;
    el.innerHTML = `<h3>${esc(s.stream)} <span class="note">${s.enabled ? '' : 'disabled · '}policy ${esc(s.policy)}${s.encryption ? ' · encrypted' : ''}${s.record ? ' · recorded' : ''}${s.profile ? ' · profile ' + esc(s.profile) : ''}</span></h3>${units}`;
    for (const c of el.getElementsByClassName('card')) {
      // Marks record a card's changes of state or colour (not of
      // figures), so that the list spans minutes.
      const k = c.dataset.key, st = c.dataset.state + ' ' + c.className;
      if (cardState.get(k) !== st) {
        cardState.set(k, st);
        mark(k, c.dataset.state + ' ' + c.className + ' ' + c.querySelector('.fps').textContent + ' ' + c.querySelector('.bitrate').textContent);
      }
    }
  }
  const streamEls = new Map();
  let filtered = false;
  function applyFilter() {
    const q = $('#stream-filter').value.trim().toLowerCase();
    if (q === '' && !filtered) return;
    filtered = q !== '';
    for (const el of $$('section.stream')) el.hidden = q !== '' && !el.dataset.stream.toLowerCase().includes(q);
  }

  // ---- CDN ----
  handlers.cdn = (v) => {
    const tb = $('#pools tbody');
    tb.innerHTML = (v.pools || []).map((p) => `<tr class="tier-${esc(p.state)}" data-vendor="${esc(p.vendor)}" data-region="${esc(p.region || '')}"><td>${esc(p.vendor)}</td><td>${esc(p.region || 'all')}</td>` +
      `<td>${p.mbps.toFixed(1)}</td><td>${p.forecast_mbps.toFixed(1)}</td><td>${p.commit_mbps}</td><td>${p.ceiling_mbps}</td>` +
      `<td>${p.ceiling_mbps ? (100 * p.mbps / p.ceiling_mbps).toFixed(1) : ''}</td><td>${esc(p.state)}</td></tr>`).join('');
    const now = Date.now();
    for (const p of v.pools || []) {
      const k = p.vendor + (p.region ? ' / ' + p.region : '');
      const h = (state.cdnHist[k] = state.cdnHist[k] || { commit: 0, ceiling: 0, pts: [] });
      h.commit = p.commit_mbps; h.ceiling = p.ceiling_mbps;
      const last = h.pts[h.pts.length - 1];
      if (!last || now - last.t >= 1000) h.pts.push({ t: now, v: p.mbps });
      while (h.pts.length && now - h.pts[0].t > 30 * 60 * 1000) h.pts.shift();
    }
    drawCharts();
    const vendors = [...new Set((v.shares || []).flatMap((s) => Object.keys(s.ratios)))].sort();
    $('#shares thead').innerHTML = '<tr><th>region</th><th>ISP</th>' + vendors.map((x) => `<th>${esc(x)}</th>`).join('') + '</tr>';
    $('#shares tbody').innerHTML = (v.shares || []).map((s) => `<tr><td>${esc(s.region || '*')}</td><td>${esc(s.isp || '*')}</td>` +
      vendors.map((x) => `<td>${s.ratios[x] == null ? '' : pct(s.ratios[x])}</td>`).join('') + '</tr>').join('');
    $('#blacklist tbody').innerHTML = (v.blacklist || []).map((b) => `<tr data-vendor="${esc(b.vendor)}"><td>${esc(b.vendor)}</td><td>${esc(b.region || 'all')}</td><td>${esc(b.isp || 'all')}</td>` +
      `<td>${b.until ? esc(new Date(b.until).toLocaleTimeString()) + ' (' + Math.max(0, Math.round((Date.parse(b.until) - now) / 1000)) + ' s)' : 'until removed'}</td>` +
      `<td>${esc(b.reason)}</td><td>${b.auto ? 'stall rule' : 'operator'}</td></tr>`).join('');
  };
  function drawCharts() {
    if (state.view !== 'cdn') return;
    const root = $('#cdn-charts');
    for (const [k, h] of Object.entries(state.cdnHist)) {
      let c = root.querySelector(`canvas[data-pool="${CSS.escape(k)}"]`);
      if (!c) {
        const fig = document.createElement('figure');
        fig.innerHTML = `<figcaption>${esc(k)}</figcaption>`;
        c = document.createElement('canvas');
        c.width = 360; c.height = 140; c.dataset.pool = k;
        fig.appendChild(c);
        root.appendChild(fig);
      }
      const g = c.getContext('2d');
      const W = c.width, H = c.height, pad = 28;
      g.clearRect(0, 0, W, H);
      const top = Math.max(h.ceiling, ...h.pts.map((p) => p.v), 1) * 1.1;
      const y = (v) => H - pad / 2 - (H - pad) * v / top;
      const t0 = h.pts.length ? h.pts[0].t : 0, t1 = h.pts.length ? h.pts[h.pts.length - 1].t : 1;
      const x = (t) => pad + (W - pad - 4) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
      const line = (v, color, dash) => { g.strokeStyle = color; g.setLineDash(dash); g.beginPath(); g.moveTo(pad, y(v)); g.lineTo(W - 4, y(v)); g.stroke(); g.setLineDash([]); };
      line(h.commit, '#d4a017', [4, 3]);
      line(h.ceiling, '#e0433a', [2, 2]);
      g.fillStyle = '#9aa4b2'; g.font = '10px sans-serif';
      g.fillText('commit ' + h.commit, pad + 2, y(h.commit) - 2);
      g.fillText('ceiling ' + h.ceiling, pad + 2, y(h.ceiling) - 2);
      g.strokeStyle = '#4aa3ff'; g.lineWidth = 2; g.beginPath();
      h.pts.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p.v)) : g.moveTo(x(p.t), y(p.v))));
      g.stroke(); g.lineWidth = 1;
      const last = h.pts[h.pts.length - 1];
      if (last) { g.fillStyle = '#e6edf3'; g.fillText(last.v.toFixed(1) + ' Mbps', W - 80, 12); }
    }
  }

  // ---- audience ----
  const audSort = { key: 'stall_rate', desc: true };
  let audRows = [];
  handlers.audience = (v) => { audRows = v.rows || []; renderAudience(); };
  function renderAudience() {
    const k = audSort.key, d = audSort.desc ? -1 : 1;
    const rows = audRows.slice().sort((a, b) => {
      const x = a[k], y = b[k];
      const c = typeof x === 'number' ? x - y : String(x).localeCompare(String(y));
      return c * d || (b.users - a.users);
    });
    $('#audience tbody').innerHTML = rows.map((r) => `<tr data-region="${esc(r.region)}" data-isp="${esc(r.isp)}" data-vendor="${esc(r.vendor)}" data-stall-rate="${r.stall_rate}" class="${r.stall_rate >= 0.05 ? 'bad' : ''}">` +
      `<td>${esc(r.region || '*')}</td><td>${esc(r.isp || '*')}</td><td>${esc(r.vendor)}</td><td>${r.users}</td>` +
      `<td class="stall">${pct(r.stall_rate)}</td><td>${pct(r.zero_stall_rate)}</td></tr>`).join('');
  }

  // ---- alerts (contract: GET /api/v1/alerts, POST .../ack, POST /api/v1/alerts/silences) ----
  // The alerts event is (*lms.Alerts).List, a JSON array; GET /api/v1/alerts
  // answers {"alerts": [...]}. Both are taken.
  handlers.alerts = (v) => { state.alerts = (Array.isArray(v) ? v : v && v.alerts) || []; renderAlerts(); };
  async function loadAlerts() {
    try { handlers.alerts(await api('GET', '/api/v1/alerts')); $('#alerts-note').textContent = ''; }
    catch (e) { $('#alerts-note').textContent = e.status === 404 ? 'Alert rules are not available on this node.' : 'Alerts: ' + e.message; }
  }
  function renderAlerts() {
    const list = (state.alerts || []).slice().sort((a, b) => (a.state === b.state ? Date.parse(b.started_at) - Date.parse(a.started_at) : a.state === 'firing' ? -1 : 1));
    const firing = list.filter((a) => a.state === 'firing').length;
    $('#firing-count').textContent = firing ? firing : '';
    $('#alerts tbody').innerHTML = list.map((a) => {
      const labels = Object.entries(a.labels || {}).map(([k, x]) => esc(k) + '=' + esc(x)).join(' ');
      const silenced = a.silenced_until && Date.parse(a.silenced_until) > Date.now();
      const silText = silenced ? 'silenced until ' + esc(new Date(a.silenced_until).toLocaleTimeString()) : '';
      const ackText = a.acked_by ? 'acked by ' + esc(a.acked_by) : '';
      const btns = canOperate() && a.state === 'firing'
        ? (ackText || `<button data-ack="${esc(a.id)}">Ack</button>`) + ' ' + (silText || `<button data-silence="${esc(a.id)}">Silence</button>`)
        : [ackText, silText].filter(Boolean).join(' ');
      return `<tr class="al-${esc(a.state)} sev-${esc(a.severity)}" data-id="${esc(a.id)}"><td>${esc(a.state)}</td><td>${esc(a.severity)}</td><td>${esc(a.rule)}</td>` +
        `<td>${esc(a.summary)}</td><td>${labels}</td><td>${num(a.value)} / ${num(a.threshold)}</td><td>${esc(ago(a.started_at))}${a.resolved_at ? ' → ' + esc(ago(a.resolved_at)) : ''}</td><td>${btns}</td></tr>`;
    }).join('');
  }
  $('#alerts').addEventListener('click', async (e) => {
    const ack = e.target.dataset.ack, sil = e.target.dataset.silence;
    try {
      if (ack) await api('POST', '/api/v1/alerts/' + encodeURIComponent(ack) + '/ack', {});
      if (sil) {
        const a = (state.alerts || []).find((x) => x.id === sil);
        if (!a) return;
        await api('POST', '/api/v1/alerts/silences', { rule: a.rule, labels: a.labels || {}, duration_s: Number($('#silence-for').value) });
      }
      if (ack || sil) loadAlerts();
    } catch (err) { alert(err.message); }
  });

  // ---- plans (contract: GET/POST /api/v1/plans, POST /{id}/confirm|cancel) ----
  // The plans event is (*lms.Plans).List, a JSON array of runs; GET
  // /api/v1/plans answers {"kinds": [...], "runs": [...]}.
  handlers.plans = (v) => {
    const runs = (Array.isArray(v) ? v : v && v.runs) || [];
    if (state.plans) state.plans.runs = runs; else state.plans = { kinds: [], runs };
    renderRuns();
  };
  // loadPlans reads the kinds and runs. The form is drawn again only when
  // the kinds change, and keeps the chosen kind and what was typed: it is
  // called on every visit of the view and after every arm, confirm and
  // cancel, while an operator may be filling it in.
  async function loadPlans() {
    try {
      const l = await api('GET', '/api/v1/plans');
      $('#plans-note').textContent = '';
      const kinds = (l && l.kinds) || [];
      const kindsKey = JSON.stringify(kinds);
      const changed = !state.plans || state.plans.kindsKey !== kindsKey;
      state.plans = { kinds, runs: (l && l.runs) || [], kindsKey };
      if (changed) {
        const sel = $('#plan-kind');
        const cur = sel.value;
        sel.innerHTML = kinds.map((k) => `<option value="${esc(k.kind)}">${esc(k.kind)}</option>`).join('');
        if (kinds.some((k) => k.kind === cur)) sel.value = cur;
        renderParams();
      }
      renderRuns();
    } catch (e) {
      $('#plans-note').textContent = e.status === 404 ? 'Emergency plans are not available on this node.' : 'Plans: ' + e.message;
    }
    $('#arm').hidden = !canOperate();
  }
  const paramName = (p) => (typeof p === 'string' ? p : p && p.name);
  // renderParams draws the chosen kind's fields; a field of the same name
  // as before (the stream, mostly) keeps its value.
  function renderParams() {
    const k = ((state.plans && state.plans.kinds) || []).find((x) => x.kind === $('#plan-kind').value);
    const old = {};
    for (const inp of $$('#plan-params input')) old[inp.name] = inp.value;
    $('#plan-desc').textContent = k ? k.description || '' : '';
    // Only the stream plans run in drill mode (on a drill stream).
    const drill = $('#plan-drill');
    drill.disabled = !(k && k.drill);
    if (drill.disabled) drill.checked = false;
    $('#plan-params').innerHTML = ((k && k.params) || []).map((p) => {
      const n = paramName(p);
      const req = typeof p === 'object' && p.required ? ' required' : '';
      return `<label>${esc(n)} <input name="${esc(n)}"${req} value="${esc(old[n] || '')}" placeholder="${esc(typeof p === 'object' && p.description ? p.description : n)}"></label>`;
    }).join('');
  }
  $('#plan-kind').addEventListener('change', renderParams);
  function renderRuns() {
    const runs = ((state.plans && state.plans.runs) || []).slice().sort((a, b) => Date.parse(b.armed_at) - Date.parse(a.armed_at));
    const steps = (r) => (r.steps || []).map((x) => new Date(x.at).toLocaleTimeString() + (x.ok ? '  ' : ' ✗ ') + x.what).join('\n');
    $('#runs tbody').innerHTML = runs.map((r) => `<tr data-id="${esc(r.id)}" class="run-${esc(r.state)}"><td>${esc(r.id)}</td><td>${esc(r.kind)}${r.drill ? ' (drill)' : ''}</td>` +
      `<td>${esc(Object.entries(r.params || {}).map(([k, v]) => k + '=' + v).join(' '))}</td><td class="state" title="${esc(steps(r))}">${esc(r.state)}${r.error ? ': ' + esc(r.error) : ''}</td>` +
      `<td>${esc(r.armed_by || '')} ${esc(ago(r.armed_at))}</td><td>${esc(r.confirmed_by || '')} ${esc(ago(r.confirmed_at))}</td>` +
      `<td>${r.verified_at ? esc(ago(r.verified_at)) + (r.verify_ms != null ? ' (' + r.verify_ms + ' ms)' : '') : ''}</td>` +
      `<td>${canOperate() && r.state === 'armed' ? `<button data-confirm="${esc(r.id)}">Confirm…</button> <button data-cancel="${esc(r.id)}">Cancel</button>` : ''}</td></tr>`).join('');
  }
  $('#runs').addEventListener('click', async (e) => {
    const id = e.target.dataset.cancel, cid = e.target.dataset.confirm;
    if (cid) {
      // A run armed elsewhere (or by another operator, plans.two_person):
      // its token is asked for in the dialog.
      const r = ((state.plans && state.plans.runs) || []).find((x) => x.id === cid);
      if (r) openConfirm(r);
      return;
    }
    if (!id) return;
    try { await api('POST', '/api/v1/plans/' + encodeURIComponent(id) + '/cancel', {}); loadPlans(); } catch (err) { alert(err.message); }
  });
  // openConfirm shows run's preview; with its token when this page armed
  // it, else with a field for the token.
  function openConfirm(run) {
    armed = run;
    const pv = run.preview || {};
    const lines = [pv.summary || '', '', 'streams: ' + (pv.streams || []).join(', '), 'players: ' + (pv.players == null ? '?' : pv.players)];
    if ((pv.vendors || []).length) lines.push('vendors: ' + pv.vendors.join(', '));
    if ((pv.regions || []).length) lines.push('regions: ' + pv.regions.join(', '));
    if ((pv.units || []).length) lines.push('units: ' + pv.units.join(', '));
    $('#confirm-title').textContent = 'Confirm ' + run.kind + (run.drill ? ' (drill)' : '');
    $('#confirm-preview').textContent = lines.join('\n');
    $('#confirm').dataset.run = run.id;
    $('#confirm-expiry').textContent = run.expires_at ? 'The confirmation expires at ' + new Date(run.expires_at).toLocaleTimeString() +
      (run.armed_by ? '; armed by ' + run.armed_by : '') + '.' : '';
    $('#confirm-token').textContent = run.token || '';
    $('#confirm-token-row').hidden = !run.token;
    $('#confirm-token-ask').hidden = !!run.token;
    $('#confirm-token-input').value = '';
    $('#confirm-status').textContent = '';
    $('#confirm-error').textContent = '';
    for (const b of $$('#confirm button')) b.disabled = false;
    if (!$('#confirm').open) $('#confirm').showModal();
  }
  function closeConfirm() {
    armed = null;
    $('#confirm-token').textContent = '';
    $('#confirm-token-input').value = '';
    delete $('#confirm').dataset.run;
    $('#confirm').close();
  }
  let armed = null;
  $('#arm').addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!canOperate()) return;
    const body = { kind: $('#plan-kind').value, drill: $('#plan-drill').checked };
    for (const inp of $$('#plan-params input')) if (inp.value.trim()) body[inp.name] = inp.value.trim();
    let run;
    try {
      run = await api('POST', '/api/v1/plans', body);
    } catch (err) { alert('Arm refused: ' + err.message); return; }
    openConfirm(run);
    loadPlans();
  });
  // Confirm: the answer comes once the effect is verified (or not); the
  // dialog stays open until then, and on a refusal (a wrong or expired
  // token, plans.two_person) it says why and keeps the token.
  $('#confirm-ok').addEventListener('click', async () => {
    const run = armed;
    if (!run) return;
    const tok = run.token || $('#confirm-token-input').value.trim();
    if (!tok) { $('#confirm-error').textContent = 'The confirmation token is needed.'; return; }
    for (const b of $$('#confirm button')) b.disabled = true;
    $('#confirm-error').textContent = '';
    $('#confirm-status').textContent = 'Executing and verifying…';
    try {
      await api('POST', '/api/v1/plans/' + encodeURIComponent(run.id) + '/confirm', { token: tok });
      if (armed === run) closeConfirm();
    } catch (err) {
      $('#confirm-status').textContent = '';
      $('#confirm-error').textContent = 'Confirm refused: ' + err.message;
      for (const b of $$('#confirm button')) b.disabled = false;
    }
    loadPlans();
  });
  $('#confirm-cancel').addEventListener('click', async () => {
    const run = armed;
    closeConfirm();
    if (run) { try { await api('POST', '/api/v1/plans/' + encodeURIComponent(run.id) + '/cancel', {}); } catch (err) { /* expired */ } }
    loadPlans();
  });
  // Leave armed: close the dialog, the run waits for its confirmation
  // (by another operator, with the token shown) until it expires.
  $('#confirm-leave').addEventListener('click', () => { closeConfirm(); loadPlans(); });
  // Escape leaves the run armed, as "Leave armed" does (the browser may
  // close a modal dialog on a second Escape whatever the page says).
  $('#confirm').addEventListener('close', () => { if (armed) closeConfirm(); });

  // ---- audit ----
  let auditTimer = null;
  handlers.audit = () => {
    if (state.view !== 'audit') return;
    clearTimeout(auditTimer);
    auditTimer = setTimeout(loadAudit, 300);
  };
  async function loadAudit() {
    const q = new URLSearchParams();
    for (const inp of $$('#audit-filter input')) {
      let v = inp.value.trim();
      if (!v) continue;
      if (inp.type === 'datetime-local') v = new Date(v).toISOString().replace(/\.\d{3}Z$/, 'Z');
      q.set(inp.name, v);
    }
    try {
      const r = await api('GET', '/api/v1/audit?' + q.toString());
      $('#audit tbody').innerHTML = (r.entries || []).map((e) => `<tr class="out-${esc(e.outcome)}"><td>${esc(new Date(e.time).toLocaleString())}</td><td>${esc(e.actor)}</td><td>${esc(e.role)}</td>` +
        `<td>${esc(e.action)}</td><td>${esc(e.target)}</td><td>${esc(e.outcome)}${e.status ? ' (' + e.status + ')' : ''}</td>` +
        `<td>${esc(Object.entries(e.detail || {}).map(([k, v]) => k + '=' + v).join(' '))}</td></tr>`).join('');
    } catch (err) {
      $('#audit tbody').innerHTML = `<tr><td colspan="7" class="error">${esc(err.message)}</td></tr>`;
    }
  }
  $('#audit-filter').addEventListener('submit', (e) => { e.preventDefault(); loadAudit(); });

  // ---- navigation ----
  function show(view) {
    state.view = view;
    for (const b of $$('#tabs button')) b.classList.toggle('on', b.dataset.view === view);
    for (const s of $$('.view')) s.hidden = s.id !== 'view-' + view;
    if (view === 'audit') loadAudit();
    if (view === 'plans') loadPlans();
    if (view === 'alerts') loadAlerts();
    if (view === 'cdn') drawCharts();
  }
  $('#tabs').addEventListener('click', (e) => { if (e.target.dataset.view) show(e.target.dataset.view); });
  $('#audience thead').addEventListener('click', (e) => {
    const k = e.target.dataset.key;
    if (!k) return;
    audSort.desc = audSort.key === k ? !audSort.desc : true;
    audSort.key = k;
    for (const th of $$('#audience th')) th.className = th.dataset.key === k ? 'sorted ' + (audSort.desc ? 'desc' : 'asc') : '';
    renderAudience();
  });
  $('#stream-filter').addEventListener('input', applyFilter);
  $('#login').addEventListener('submit', (e) => { e.preventDefault(); login($('#token').value.trim()); $('#token').value = ''; });
  $('#logout').addEventListener('click', () => logout(''));
  window.__lf.show = show;

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) login(saved); else logout('');
  const initial = location.hash.replace('#', '');
  if (initial && $('#view-' + initial)) show(initial);
})();
