// livefuse-player.js: the livefuse player SDK (an ES module, no build step).
//
//   import { play } from '/player/livefuse-player.js';
//   const c = play(document.querySelector('video'), { stream: 'live/demo', format: 'flv' });
//   c.on('line', (e) => console.log('now on', e.vendor));
//
// play() resolves the stream through the dispatcher (GET
// {dispatch}APP/NAME.flv?format=json), plays the first candidate and keeps
// the others; when the dispatcher fails or does not answer within
// dispatchTimeoutMs it picks a vendor from {dispatch}fallback.json by its
// ratios (weighted random, so the split holds over many players). A start
// failure, a lost connection or a stall of stallMs or more moves to the
// next candidate (line change); after stallsToStepDown stalls within
// stallWindowMs it steps down the ABR ladder (hls.js: caps the level; FLV:
// the rendition stream NAME_<rendition> named in opts.renditions or the
// multivariant playlist, through the dispatcher again). An FLV stall while
// bytes still arrive is a slow line, not a dead one: it steps down at once
// on the same line, and moves line from the lowest rendition. HTTP-FLV
// reconnects continue the same mpegts.js player: the loader asks the next
// line to resume (?resume_after=T&resume_key=K: the last video timestamp
// the page has and its GOP's keyframe, origin/flv_resume.go), so only
// what follows comes, and drops any tag the page already has, so no frame
// is shown twice.
//
// Encrypted FLV is decrypted in the page (flvdecrypt.js). QoS beacons go
// to /qos with the session token of the dispatch answer (on the fallback
// path, one asked from {qos}/session for the vendor picked): start,
// first_frame (first_frame_ms), stall (buffer_empty_ms, one per buffer
// empty of stallMs or more), bitrate (bitrate_kbps), error. With cmcd: true
// (HLS), hls.js reports CMCD (CTA-5004) by itself as well: request mode on
// its media requests, and event mode (v2) to /qos?token=<session token>.
//
// With steering: true (HLS), the page plays {dispatch}APP/NAME/steered.m3u8
// instead: HLS Content Steering, where hls.js itself moves between the
// vendors (pathways) as the dispatcher's steering manifest orders them;
// the SDK reports the pathway each fragment comes from ('pathway' events)
// and steps in when hls.js stays off the manifest's first pathway
// (watchPathways).
//
// The libraries (hls.js, mpegts.js, flvdecrypt.js) are loaded from libs
// (default: the node's /player/ directory) when the page has not loaded
// them itself.

const DEFAULTS = {
  format: 'flv',
  url: '', // play this URL as the only line, no dispatch (format from its path)
  dispatch: '/dispatch/',
  fallback: '', // default: {dispatch}fallback.json
  qos: '/qos', // '' turns beacons off
  dispatchTimeoutMs: 2000,
  startTimeoutMs: 10000,
  stallMs: 2000,
  stallsToStepDown: 2,
  stallWindowMs: 60000,
  maxLineChanges: 20,
  heartbeatMs: 10000,
  renditions: [], // FLV ladder below the source, best first: ['720p', '480p']
  token: '', // a play token for vendor URLs that need one (fallback path)
  cmcd: false,
  steering: false, // HLS: play {dispatch}APP/NAME/steered.m3u8 (HLS Content Steering: pathways per vendor)
  steeringGraceMs: 6000, // off the steering manifest's first pathway this long (and two loads): set it ourselves
  hlsConfig: {},
  libs: '', // default: the directory this module is served from
};

// pickWeighted returns the index of the vendor an r in [0, 1) falls on,
// by ratio; vendors with no ratio share evenly when none has one.
export function pickWeighted(vendors, r) {
  const ws = vendors.map((v) => (Number.isFinite(v.ratio) && v.ratio > 0 ? v.ratio : 0));
  let total = ws.reduce((a, b) => a + b, 0);
  if (total <= 0) {
    ws.fill(1);
    total = ws.length;
  }
  let x = r * total;
  for (let i = 0; i < ws.length; i++) {
    if (x < ws[i]) return i;
    x -= ws[i];
  }
  return ws.length - 1;
}

function streamPath(stream, format) {
  return format === 'hls' ? '/' + stream + '/index.m3u8' : '/' + stream + '.flv';
}

function withToken(url, token) {
  if (!token) return url;
  const u = new URL(url, location.href);
  if (!u.searchParams.has('auth_key')) u.searchParams.set('auth_key', token);
  return u.toString();
}

async function fetchJSON(url, timeoutMs) {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const resp = await fetch(url, { signal: ac.signal, cache: 'no-store', credentials: 'omit' });
    if (!resp.ok) throw new Error('HTTP ' + resp.status);
    return await resp.json();
  } catch (e) {
    if (ac.signal.aborted) throw new Error('no answer within ' + timeoutMs + ' ms');
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

// fallbackCandidates orders a fallback document's vendors for one start:
// the one r picks by ratio first, then the others by ratio.
export function fallbackCandidates(doc, stream, format, token, r) {
  const vs = (doc && Array.isArray(doc.vendors) ? doc.vendors : []).filter((v) => v && typeof v.name === 'string');
  if (vs.length === 0) return [];
  const first = pickWeighted(vs, r);
  const rest = vs.map((v, i) => i).filter((i) => i !== first).sort((a, b) => (vs[b].ratio || 0) - (vs[a].ratio || 0));
  return [first, ...rest].map((i) => {
    const base = format === 'hls' ? vs[i].hls_base : vs[i].flv_base;
    return { vendor: vs[i].name, url: withToken(String(base).replace(/\/$/, '') + streamPath(stream, format), token), qos_token: '' };
  });
}

// resolve asks the dispatcher for the candidates of a stream, or the
// fallback document when it fails: {source, candidates, error}.
export async function resolve(opts) {
  const o = Object.assign({}, DEFAULTS, opts);
  const base = new URL(o.dispatch, location.href);
  const u = new URL(o.stream + (o.format === 'hls' ? '/index.m3u8' : '.flv'), base);
  u.searchParams.set('format', 'json');
  let why = '';
  try {
    const ans = await fetchJSON(u.toString(), o.dispatchTimeoutMs);
    if (ans && Array.isArray(ans.candidates) && ans.candidates.length > 0) {
      return { source: 'dispatch', candidates: ans.candidates.map((c) => ({ vendor: c.vendor, url: c.url, qos_token: c.qos_token || ans.qos_token || '' })) };
    }
    why = 'no candidates';
  } catch (e) {
    why = String(e && e.message || e);
  }
  const fb = o.fallback ? new URL(o.fallback, location.href) : new URL('fallback.json', base);
  const doc = await fetchJSON(fb.toString(), o.dispatchTimeoutMs);
  return { source: 'fallback', error: why, candidates: fallbackCandidates(doc, o.stream, o.format, o.token, Math.random()) };
}

const scriptLoads = new Map();
function loadScript(src) {
  if (!scriptLoads.has(src)) {
    scriptLoads.set(src, new Promise((ok, fail) => {
      const s = document.createElement('script');
      s.src = src;
      s.onload = () => ok();
      s.onerror = () => fail(new Error('could not load ' + src));
      document.head.appendChild(s);
    }));
  }
  return scriptLoads.get(src);
}

async function loadLibs(o) {
  const base = o.libs ? new URL(o.libs, location.href) : new URL('./', import.meta.url);
  if (o.format === 'hls') {
    if (!window.Hls) await loadScript(new URL('vendor/hls.min.js', base).toString());
    return;
  }
  if (!window.mpegts) await loadScript(new URL('vendor/mpegts.js', base).toString());
  if (!window.LivefuseFLV) await loadScript(new URL('flvdecrypt.js', base).toString());
}

function readU24(b, off) { return (b[off] << 16) | (b[off + 1] << 8) | b[off + 2]; }
// tagTime is an FLV tag's timestamp in ms (24 bits and the extension byte).
function tagTime(tag) { return ((tag[7] << 24) >>> 0) + readU24(tag, 4); }

// Controller is what play() returns: the running player of one stream.
export class Controller {
  constructor(video, opts) {
    this.video = video;
    this.o = Object.assign({}, DEFAULTS, opts);
    if (this.o.url) {
      const p = new URL(this.o.url, location.href).pathname;
      this.o.format = p.endsWith('.m3u8') ? 'hls' : 'flv';
      const m = p.match(/^\/([^/]+)\/([^/.]+)(\.flv|\/)/);
      if (!this.o.stream) this.o.stream = m ? m[1] + '/' + m[2] : 'direct/url';
    }
    if (!this.o.stream || !/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/.test(this.o.stream)) throw new Error('stream must be APP/NAME');
    this.listeners = new Map();
    this.state = {
      stream: this.o.stream, format: this.o.format, source: '', candidates: [], index: -1, vendor: '',
      lineChanges: 0, stalls: 0, stepDowns: 0, rendition: '', firstFrameMs: -1, errors: [], events: [],
      beacons: { sent: 0, accepted: 0, refused: 0, byEvent: {} }, cmcd: { sent: 0, accepted: 0, starved: 0, payloads: [] },
      freeze: { maxMs: 0, list: [] }, shown: { lastVideoTs: -1, lastKeyTs: -1, lastAudioTs: -1, repeats: 0, videoTags: 0 },
      reconnectMs: [], // per FLV reconnect: from the switch to the first new video frame handed on
      resumes: [], // per FLV reconnect: {lastTs, firstTs, key, ms}: the last video timestamp before, the first after
      bitrateKbps: 0, decrypt: { tags: 0, decrypted: 0, signals: 0 },
      pathway: '', fragHost: '', pathways: [], // HLS: the pathway (vendor) fragments come from, and its changes
      steering: { loads: 0, priority: [], forced: 0 },
    };
    this.destroyed = false;
    this.player = null; // mpegts.js player or hls.js instance
    this.stallTimes = [];
    this.t0 = performance.now();
    this.timers = [];
    this.ready = this.start();
  }

  // on adds a listener for an event: dispatch, line, firstframe, stall,
  // stepdown, bitrate, error, beacon, ended.
  on(name, fn) {
    if (!this.listeners.has(name)) this.listeners.set(name, []);
    this.listeners.get(name).push(fn);
    return this;
  }

  emit(name, detail) {
    const d = Object.assign({ t: Math.round(performance.now() - this.t0) }, detail || {});
    this.state.events.push(Object.assign({ event: name }, d));
    if (this.state.events.length > 500) this.state.events.splice(0, 100);
    for (const fn of this.listeners.get(name) || []) {
      try { fn(d); } catch (e) { /* a listener's error is the page's */ }
    }
  }

  get candidate() { return this.state.candidates[this.state.index] || null; }

  async start() {
    try {
      await loadLibs(this.o);
      let res;
      if (this.o.url) res = { source: 'url', candidates: [{ vendor: 'url', url: this.o.url, qos_token: '' }] };
      else if (this.o.steering && this.o.format === 'hls') {
        const u = new URL(this.o.stream + '/steered.m3u8', new URL(this.o.dispatch, location.href));
        res = { source: 'steering', candidates: [{ vendor: 'steering', url: u.toString(), qos_token: '' }] };
      } else res = await resolve(this.o);
      if (this.destroyed) return;
      this.state.source = res.source;
      this.state.candidates = res.candidates;
      this.emit('dispatch', { source: res.source, vendors: res.candidates.map((c) => c.vendor), error: res.error || '' });
      if (res.candidates.length === 0) throw new Error('no vendor to play from');
      this.state.index = 0;
      this.beacon('start', {});
      this.watch();
      this.openLine('start');
    } catch (e) {
      this.fail('start: ' + (e && e.message || e), true);
    }
  }

  fail(msg, fatal) {
    this.state.errors.push(msg);
    this.emit('error', { message: msg, fatal: !!fatal });
    this.beacon('error', { error: msg.slice(0, 1000) });
  }

  // beacon posts one QoS event with the current candidate's session token.
  // On the fallback path (no dispatch answer, so no token) the token comes
  // from {qos}/session for the vendor picked; beacons wait for it.
  beacon(event, fields) {
    const c = this.candidate;
    if (!this.o.qos || !c) return;
    if (!c.qos_token) {
      if (this.state.source !== 'fallback') return;
      if (!c.tokenAsk) {
        const u = new URL(this.o.qos.replace(/\/$/, '') + '/session', location.href);
        u.searchParams.set('stream', this.o.stream);
        u.searchParams.set('vendor', c.vendor);
        c.tokenAsk = fetchJSON(u.toString(), this.o.dispatchTimeoutMs)
          .then((a) => { if (a && typeof a.qos_token === 'string') c.qos_token = a.qos_token; }, () => {});
      }
      c.tokenAsk.then(() => { if (c.qos_token) this.beacon(event, fields); });
      return;
    }
    const body = Object.assign({ event, token: c.qos_token }, fields);
    const st = this.state.beacons;
    st.sent++;
    st.byEvent[event] = (st.byEvent[event] || 0) + 1;
    fetch(new URL(this.o.qos, location.href).toString(), {
      method: 'POST', body: JSON.stringify(body), keepalive: true, credentials: 'omit',
      headers: { 'Content-Type': 'application/json' },
    }).then((r) => { if (r.status === 204) st.accepted++; else st.refused++; }, () => { st.refused++; });
    this.emit('beacon', { event, fields });
  }

  // watch samples the video element every 250 ms: first frame, freezes
  // (the picture not moving while it should), stalls.
  watch() {
    let lastT = -1, lastMove = performance.now(), stallFrom = 0;
    const tick = () => {
      if (this.destroyed) return;
      const v = this.video, now = performance.now();
      if (v.currentTime !== lastT) {
        if (lastT >= 0 || v.currentTime > 0) {
          const frozen = now - lastMove;
          if (this.state.firstFrameMs < 0 && v.currentTime > 0) {
            this.state.firstFrameMs = Math.round(now - this.t0);
            this.emit('firstframe', { ms: this.state.firstFrameMs, vendor: this.state.vendor });
            this.beacon('first_frame', { first_frame_ms: this.state.firstFrameMs });
            if (this.o.format === 'flv') this.ladder(); // learnt now, while the line works
          } else if (frozen >= 300) { // the picture stood still (ticks are 250 ms)
            this.state.freeze.list.push(Math.round(frozen));
            this.state.freeze.maxMs = Math.max(this.state.freeze.maxMs, Math.round(frozen));
          }
          if (stallFrom) {
            this.emit('stallend', { ms: Math.round(now - stallFrom), vendor: this.state.vendor });
            stallFrom = 0;
          }
        }
        lastT = v.currentTime;
        lastMove = now;
      } else if (this.state.firstFrameMs >= 0 && !v.paused && !stallFrom && now - lastMove >= this.o.stallMs) {
        stallFrom = lastMove;
        this.onStall(now - lastMove);
      } else if (this.state.firstFrameMs < 0 && now - this.lineOpened > this.o.startTimeoutMs) {
        this.lineOpened = now;
        this.fail('no first frame from ' + this.state.vendor + ' within ' + this.o.startTimeoutMs + ' ms');
        this.nextLine('start failure');
      }
    };
    const id = setInterval(tick, 250);
    this.timers.push(() => clearInterval(id));
    const hb = setInterval(() => this.beacon('heartbeat', {}), this.o.heartbeatMs);
    this.timers.push(() => clearInterval(hb));
  }

  // onStall: the picture has not moved for ms (stallMs or more) while
  // playing: one stall (the stall rate's definition: buffer empty for 2 s
  // or more), reported against the line it happened on, then a step down
  // the ladder (after stallsToStepDown in stallWindowMs) or a line change.
  onStall(ms) {
    ms = Math.round(ms);
    const now = performance.now();
    // Bytes still arriving while the picture stands still: the line is
    // slow, not gone. FLV steps down on the same line at once, and moves
    // line only from the lowest rendition.
    const slow = this.o.format === 'flv' && this.lastBytesAt > 0 && now - this.lastBytesAt < this.o.stallMs;
    this.state.stalls++;
    this.emit('stall', { ms, vendor: this.state.vendor, slow, bytesAgoMs: this.lastBytesAt > 0 ? Math.round(now - this.lastBytesAt) : -1 });
    this.beacon('stall', { buffer_empty_ms: ms });
    if (slow) {
      this.stallTimes = [];
      const line = this.state.index;
      this.stepDownFLV(true).then((ok) => { if (!ok && this.state.index === line) this.nextLine('stall (slow line, lowest rendition)'); });
      return;
    }
    this.stallTimes = this.stallTimes.filter((t) => now - t < this.o.stallWindowMs);
    this.stallTimes.push(now);
    if (this.stallTimes.length >= this.o.stallsToStepDown) {
      this.stallTimes = [];
      if (this.o.format === 'hls') {
        if (this.stepDownHLS()) return;
      } else {
        const line = this.state.index;
        this.stepDownFLV().then((ok) => { if (!ok && this.state.index === line) this.nextLine('stall'); });
        return;
      }
    }
    this.nextLine('stall');
  }

  // stepDownHLS caps hls.js one level lower; false when it is at the lowest.
  stepDownHLS() {
    const hls = this.player;
    if (!hls || !hls.levels || hls.levels.length < 2) {
      this.emit('stepdown', { available: false, reason: 'one level only' });
      return false;
    }
    const cur = hls.autoLevelCapping >= 0 ? hls.autoLevelCapping : hls.levels.length - 1;
    const cap = Math.min(cur, hls.currentLevel >= 0 ? hls.currentLevel : cur) - 1;
    if (cap < 0) {
      this.emit('stepdown', { available: false, reason: 'lowest level already' });
      return false;
    }
    hls.autoLevelCapping = cap;
    hls.nextLevel = cap;
    this.state.stepDowns++;
    this.emit('stepdown', { available: true, level: cap });
    return true;
  }

  // ladder is the FLV rendition ladder below the source, best first:
  // opts.renditions, or the renditions the stream's multivariant playlist
  // lists (v/<rendition>/index.m3u8, by BANDWIDTH), read through the line
  // playing; [] when neither says.
  async ladder() {
    if (this.o.renditions && this.o.renditions.length) return this.o.renditions;
    if (this.foundLadder) return this.foundLadder;
    const c = this.candidate;
    const u = new URL(c.url, location.href);
    u.pathname = u.pathname.replace(/\.flv$/, '/index.m3u8');
    const found = [];
    try {
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), this.o.dispatchTimeoutMs);
      const resp = await fetch(u.toString(), { signal: ac.signal, cache: 'no-store', credentials: 'omit' });
      const text = resp.ok ? (await resp.text()).slice(0, 65536) : '';
      clearTimeout(timer);
      const lines = text.split('\n');
      for (let i = 0; i + 1 < lines.length; i++) {
        const bw = /^#EXT-X-STREAM-INF:.*BANDWIDTH=(\d+)/.exec(lines[i]);
        const m = bw && /(?:^|\/)v\/([A-Za-z0-9_.-]+)\/index\.m3u8/.exec(lines[i + 1].trim());
        if (m && m[1] !== 'source') found.push({ name: m[1], bw: Number(bw[1]) });
      }
    } catch (e) { /* no playlist: no ladder */ }
    this.foundLadder = found.sort((a, b) => b.bw - a.bw).map((r) => r.name);
    return this.foundLadder;
  }

  // stepDownFLV moves to the next rendition stream NAME_<rendition> (on
  // the line playing first with sameLine, else on another): its
  // candidates from the dispatcher, else the lines in hand with the
  // rendition's path (unsigned URLs only: a vendor signature covers the
  // path). False, with a stepdown event saying why, when it cannot.
  async stepDownFLV(sameLine) {
    const ladder = await this.ladder();
    const i = this.state.rendition ? ladder.indexOf(this.state.rendition) + 1 : 0;
    const no = (reason) => { this.emit('stepdown', { available: false, reason }); return false; };
    if (i >= ladder.length) return no(ladder.length ? 'lowest rendition already' : 'no rendition ladder (opts.renditions, or the multivariant playlist lists none)');
    const r = ladder[i];
    const [app, name] = this.o.stream.split('/');
    let cands = [];
    try {
      const u = new URL(app + '/' + name + '_' + r + '.flv', new URL(this.o.dispatch, location.href));
      u.searchParams.set('format', 'json');
      const ans = await fetchJSON(u.toString(), this.o.dispatchTimeoutMs);
      cands = (ans.candidates || []).map((c) => ({ vendor: c.vendor, url: c.url, qos_token: c.qos_token || ans.qos_token || '' }));
    } catch (e) {
      const base = this.state.rendition ? name + '_' + this.state.rendition : name;
      cands = this.state.candidates.filter((c) => !/[?&](auth_key|sign|exp|t)=/.test(c.url)).map((c) => {
        const u = new URL(c.url, location.href);
        u.pathname = u.pathname.replace(new RegExp('/' + base + '\\.flv$'), '/' + name + '_' + r + '.flv');
        return Object.assign({}, c, { url: u.toString() });
      });
    }
    if (this.destroyed) return true;
    if (cands.length === 0) return no('rendition ' + r + ' not reachable: the dispatcher does not know it and the lines are signed');
    this.state.rendition = r;
    this.state.stepDowns++;
    this.emit('stepdown', { available: true, rendition: r });
    const vendor = this.state.vendor;
    // Start on another line than the one that stalled when there is one
    // (on the same one when it is only slow).
    cands.sort((a, b) => sameLine ? (b.vendor === vendor) - (a.vendor === vendor) : (a.vendor === vendor) - (b.vendor === vendor));
    this.state.candidates = cands;
    this.state.index = 0;
    this.resetShown = true; // a rendition has a timeline of its own
    this.openLine('step down');
    return true;
  }

  // nextLine moves to the next candidate (round robin over the list).
  nextLine(reason) {
    if (this.destroyed) return;
    if (this.state.lineChanges >= this.o.maxLineChanges) {
      this.fail('gave up after ' + this.state.lineChanges + ' line changes', true);
      this.destroy();
      return;
    }
    this.state.lineChanges++;
    const n = this.state.candidates.length;
    this.state.index = (this.state.index + 1) % n;
    // Back to a line that just failed: wait a little (at most 1 s a round).
    const wait = this.state.lineChanges >= n ? Math.max(0, 1000 - (performance.now() - this.lineOpened)) : 0;
    if (wait > 0) {
      const id = setTimeout(() => { if (!this.destroyed) this.openLine(reason); }, wait);
      this.timers.push(() => clearTimeout(id));
      return;
    }
    this.openLine(reason);
  }

  openLine(reason) {
    const c = this.candidate;
    this.state.vendor = c.vendor;
    this.lineOpened = performance.now();
    this.emit('line', { vendor: c.vendor, index: this.state.index, reason });
    if (this.o.format === 'hls') this.openHLS(c);
    else this.openFLV(c);
  }

  // openFLV starts mpegts.js once; later lines reuse it: its loader
  // fetches the new line and continues the same stream.
  openFLV(c) {
    if (this.player && this.loader && !this.resetShown) {
      this.loader.switchTo(c.url);
      return;
    }
    this.resetShown = false;
    if (this.player) { try { this.player.destroy(); } catch (e) { /* gone */ } this.player = null; }
    Object.assign(this.state.shown, { lastVideoTs: -1, lastKeyTs: -1, lastAudioTs: -1 }); // a new player takes all
    const mpegts = window.mpegts;
    if (!mpegts || !mpegts.isSupported()) throw new Error('mpegts.js not supported here');
    const ctl = this;
    const Loader = makeResumingLoader(mpegts, ctl);
    const p = mpegts.createPlayer({ type: 'flv', isLive: true, url: c.url, hasAudio: true, hasVideo: true },
      { customLoader: Loader, enableStashBuffer: false, liveBufferLatencyChasing: true, enableWorker: false });
    this.player = p;
    p.on(mpegts.Events.ERROR, (type, detail, info) => {
      this.fail('mpegts.js ' + type + ' ' + detail + ' ' + (info && info.msg || ''));
    });
    p.on(mpegts.Events.MEDIA_INFO, (mi) => {
      const kbps = Math.round((mi.videoDataRate || 0) + (mi.audioDataRate || 0));
      if (kbps && kbps !== this.state.bitrateKbps) {
        this.state.bitrateKbps = kbps;
        this.emit('bitrate', { kbps });
        this.beacon('bitrate', { bitrate_kbps: kbps });
      }
    });
    p.attachMediaElement(this.video);
    p.load();
    this.video.play().catch(() => {});
  }

  openHLS(c) {
    if (this.player) { try { this.player.destroy(); } catch (e) { /* gone */ } this.player = null; }
    const Hls = window.Hls;
    if (!Hls || !Hls.isSupported()) throw new Error('hls.js not supported here');
    // lowLatencyMode (hls.js's default) acts only on playlists with parts (hls_variant:
    // lowlatency: about 1.5 s glass to glass); MPEG-TS playlists ignore it.
    const cfg = Object.assign({ lowLatencyMode: true }, this.o.hlsConfig);
    if (this.o.cmcd && this.o.qos && c.qos_token) {
      // Stock hls.js reports CMCD itself: request mode on its media
      // requests (to the vendor), and event mode (CMCD v2: play state
      // changes, errors, bitrate changes, every 10 s) to /qos with this
      // line's session token. The requester only counts what it sends.
      const st = this.state.cmcd;
      const target = new URL(this.o.qos, location.href);
      target.searchParams.set('token', c.qos_token);
      cfg.cmcd = Object.assign({
        contentId: this.o.stream,
        eventTargets: [{ url: target.toString(), events: ['ps', 'e', 't', 'bc'], interval: 10, batchSize: 1 }],
        loader: (req) => {
          const lines = String(req.body || '').split('\n').filter(Boolean);
          st.sent += lines.length;
          for (const l of lines) {
            if (/(^|,)sta=r(,|$)/.test(l)) st.starved++;
            st.payloads.push(l);
          }
          if (st.payloads.length > 50) st.payloads.splice(0, st.payloads.length - 50);
          const init = Object.assign({}, req, { credentials: 'omit', keepalive: true });
          delete init.url;
          return fetch(req.url, init).then((r) => { if (r.status === 204) st.accepted += lines.length; return r; });
        },
      }, cfg.cmcd || {});
    }
    const hls = new Hls(cfg);
    this.player = hls;
    hls.on(Hls.Events.ERROR, (ev, data) => {
      const msg = 'hls.js ' + data.type + ' ' + data.details + (data.fatal ? ' (fatal)' : '') +
        (data.response && data.response.code ? ' HTTP ' + data.response.code : '');
      if (data.fatal) {
        this.fail(msg);
        if (this.player === hls) this.nextLine('error');
      }
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (ev, data) => {
      const lv = hls.levels[data.level];
      const kbps = lv ? Math.round(lv.bitrate / 1000) : 0;
      if (kbps && kbps !== this.state.bitrateKbps) {
        this.state.bitrateKbps = kbps;
        this.emit('bitrate', { kbps, level: data.level });
        this.beacon('bitrate', { bitrate_kbps: kbps });
      }
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => { this.video.play().catch(() => {}); });
    this.watchPathways(hls, Hls);
    hls.loadSource(c.url);
    hls.attachMedia(this.video);
  }

  // watchPathways follows HLS Content Steering: the pathway (a vendor)
  // each fragment comes from, and the steering manifest's priority. It
  // works around hls.js leaving the manifest's first pathway (a level
  // switch landing on a lower-priority pathway, video-dev/hls.js#6759; a
  // pathway penalised after errors never tried again, #5747): when two
  // manifest loads in a row, steeringGraceMs apart or more, find fragments
  // coming from another pathway than the first of PATHWAY-PRIORITY, it
  // sets hls.pathwayPriority itself (public since hls.js 1.5).
  watchPathways(hls, Hls) {
    hls.on(Hls.Events.FRAG_LOADED, (ev, data) => {
      if (this.player !== hls || !data.frag || data.frag.type !== 'main') return;
      const lv = hls.levels[data.frag.level];
      const pw = (lv && lv.pathwayId) || '.';
      let host = '';
      try { host = new URL(data.frag.url).host; } catch (e) { /* no URL */ }
      this.state.fragHost = host;
      if (pw === this.state.pathway) return;
      const from = this.state.pathway;
      this.state.pathway = pw;
      if (this.state.source === 'steering') this.state.vendor = pw;
      this.state.pathways.push({ t: Math.round(performance.now() - this.t0), pathway: pw, host });
      if (this.state.pathways.length > 100) this.state.pathways.shift();
      this.emit('pathway', { from, to: pw, host });
    });
    let offSince = 0, offLoads = 0;
    hls.on(Hls.Events.STEERING_MANIFEST_LOADED, (ev, data) => {
      const m = (data && data.steeringManifest) || {};
      const pri = Array.isArray(m['PATHWAY-PRIORITY']) ? m['PATHWAY-PRIORITY'].slice(0, 16).map(String) : [];
      const st = this.state.steering;
      st.loads++;
      st.priority = pri;
      const now = performance.now();
      if (!(pri.length > 0 && this.state.pathway !== '' && this.state.pathway !== pri[0])) {
        offSince = 0;
        offLoads = 0;
        return;
      }
      if (!offSince) offSince = now;
      // hls.js moves at its next playlist and fragment loads: give it two
      // manifest loads and steeringGraceMs before stepping in.
      if (++offLoads >= 2 && now - offSince >= this.o.steeringGraceMs) {
        st.forced++;
        offSince = now;
        offLoads = 0;
        this.emit('steer', { from: this.state.pathway, to: pri[0], forced: true });
        try { hls.pathwayPriority = pri; } catch (e) { /* older hls.js */ }
      }
    });
  }

  // lineLost is called by the FLV loader when its connection ends.
  lineLost(why) {
    this.state.errors.push(this.state.vendor + ': ' + why);
    this.emit('lost', { vendor: this.state.vendor, why });
    this.nextLine('lost: ' + why);
  }

  stats() { return JSON.parse(JSON.stringify(this.state)); }

  destroy() {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const f of this.timers) f();
    if (this.player) { try { this.player.destroy(); } catch (e) { /* gone */ } this.player = null; }
    this.emit('ended', {});
  }
}

// makeResumingLoader returns an mpegts.js custom loader that decrypts (as
// flvdecrypt.js does) and, on a new line, goes on with the same FLV stream:
// the new connection's header is dropped and so is every audio or video
// tag at or before the last timestamp already handed to mpegts.js.
function makeResumingLoader(mpegts, ctl) {
  const Base = mpegts.BaseLoader;
  const Status = mpegts.LoaderStatus || { kIdle: 0, kConnecting: 1, kBuffering: 2, kError: 3, kComplete: 4 };
  const FLV = window.LivefuseFLV;
  return class ResumingLoader extends Base {
    constructor() {
      super('livefuse-resuming-loader');
      this._needStash = true;
      this._ac = null;
      this._pos = 0;
      this._conns = 0;
      ctl.loader = this;
    }
    static isSupported() { return !!(window.fetch && window.crypto && window.crypto.subtle); }
    open(dataSource) {
      this._status = Status.kConnecting;
      this.switchTo(dataSource.url);
    }
    switchTo(url) {
      if (this._ac) this._ac.abort();
      const ac = new AbortController();
      this._ac = ac;
      const first = this._conns++ === 0;
      const shown = ctl.state.shown;
      const t0 = performance.now();
      let resumed = first;
      const lastBefore = shown.lastVideoTs;
      if (!first && shown.lastVideoTs >= 0 && shown.lastKeyTs >= 0) {
        // The origin's resume (origin/flv_resume.go): only what follows
        // the last frame this page has, on the same timeline.
        const u = new URL(url, location.href);
        u.searchParams.set('resume_after', String(shown.lastVideoTs));
        u.searchParams.set('resume_key', String(shown.lastKeyTs));
        url = u.toString();
      }
      const filter = (tag) => {
        const type = tag[0] & 0x1f;
        if (type !== 8 && type !== 9) return first; // metadata only once
        const isSeqHeader = (type === 9 && tag[12] === 0) || (type === 8 && tag[12] === 0);
        const ts = tagTime(tag);
        if (isSeqHeader) return true;
        if (type === 9) {
          if (ts <= shown.lastVideoTs) { shown.repeats++; return false; }
          if ((tag[11] >> 4) === 1) shown.lastKeyTs = ts;
          shown.lastVideoTs = ts;
          shown.videoTags++;
          if (!resumed) {
            resumed = true;
            ctl.state.reconnectMs.push(Math.round(performance.now() - t0));
            ctl.state.resumes.push({ lastTs: lastBefore, firstTs: ts, key: (tag[11] >> 4) === 1, ms: Math.round(performance.now() - t0) });
            if (ctl.state.resumes.length > 100) ctl.state.resumes.shift();
          }
          return true;
        }
        if (ts <= shown.lastAudioTs) return false;
        shown.lastAudioTs = ts;
        return true;
      };
      const dec = new FLV.FLVDecryptor({ fetchKey: FLV.keyFetcher(url), filter, dropHeader: !first });
      const totals = Object.assign({}, ctl.state.decrypt);
      const run = async () => {
        const resp = await fetch(url, { signal: ac.signal, cache: 'no-store', credentials: 'omit' });
        if (!resp.ok) throw new Error('HTTP ' + resp.status);
        this._status = Status.kBuffering;
        const reader = resp.body.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) throw new Error('connection closed');
          ctl.lastBytesAt = performance.now();
          const clear = await dec.push(value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength));
          if (ac.signal.aborted) return;
          for (const k of ['tags', 'decrypted', 'signals']) ctl.state.decrypt[k] = totals[k] + dec.stats[k];
          if (clear.length > 0 && this._onDataArrival) {
            const start = this._pos;
            this._pos += clear.length;
            this._onDataArrival(clear.buffer, start, this._pos);
          }
        }
      };
      run().catch((e) => {
        if (ac.signal.aborted || ctl.destroyed) return;
        ctl.lineLost(String(e && e.message || e));
      });
    }
    abort() {
      if (this._ac) this._ac.abort();
      this._status = Status.kComplete;
    }
  };
}

// play starts playing opts.stream into video and returns its Controller.
export function play(video, opts) {
  return new Controller(video, opts);
}
