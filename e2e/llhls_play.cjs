// llhls_play.cjs plays a low-latency HLS stream in Debian's Chromium with
// hls.js (lowLatencyMode) and measures glass-to-glass latency: the
// publisher stamps every frame with its wall clock (milliseconds modulo
// 2^24, as 24 black or white 20x20 blocks in the top two rows, bit i at
// column i%16, row i/16); the page reads them back from each presented
// frame through a canvas and compares with its own clock. hls.js runs with
// lowLatencyMode and maxLiveSyncPlaybackRate 1.5 (it catches up with its
// target latency, PART-HOLD-BACK, when it started behind).
//
//   node llhls_play.cjs WEB_DIR ORIGIN_URL PLAYLIST_URL SECONDS
//
// ORIGIN_URL is any page of the playlist's origin (the page runs there, so
// no CORS is needed). One JSON line on stdout: frames measured, median and
// p95 latency (ms), the longest time between two presented frames (ms),
// the hls.js errors and the playlist requests that were
// blocking (with _HLS_msn). Bounded: SECONDS + 40 s at most.
'use strict';
const path = require('path');
const { createRequire } = require('module');

const [webDir, originURL, src, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 15);
const req = createRequire(path.join(path.resolve(webDir), 'package.json'));
const { chromium } = req('playwright-core');
const hlsPath = path.join(path.resolve(webDir), 'node_modules', 'hls.js', 'dist', 'hls.min.js');

const result = { ok: false, frames: 0, p50: 0, p95: 0, max: 0, maxGap: 0, warnings: [], errors: [], blocking: 0, playlists: 0, parts: 0, status4xx: [] };
setTimeout(() => { result.errors.push('driver timeout'); finish(1); }, (seconds + 40) * 1000).unref();

function finish(code) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(code);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: 30000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required'],
  });
  try {
    const page = await browser.newPage();
    page.on('pageerror', (e) => result.errors.push('page: ' + e.message));
    page.on('request', (r) => {
      const u = r.url();
      if (u.includes('.m3u8')) {
        result.playlists++;
        if (u.includes('_HLS_msn=')) result.blocking++;
      } else if (/\/p[0-9]+\.m4s/.test(u)) {
        result.parts++;
      }
    });
    page.on('response', (r) => { if (r.status() >= 400 && r.url() !== originURL) result.status4xx.push(r.status() + ' ' + r.url().replace(/\?.*/, '')); });
    await page.goto(originURL, { timeout: 15000 });
    await page.setContent('<video id="v" muted autoplay playsinline width="320" height="180"></video><canvas id="c" width="320" height="180"></canvas>');
    await page.addScriptTag({ path: hlsPath });
    const rep = await page.evaluate(async ({ src, seconds }) => {
      const out = { samples: [], errors: [] };
      const v = document.getElementById('v');
      const c = document.getElementById('c');
      const g = c.getContext('2d', { willReadFrequently: true });
      // lowLatencyMode (the default) follows PART-HOLD-BACK; a player may
      // start up to a GOP behind it (it starts at an independent part), and
      // catches up by playing at up to 1.5x.
      // hls.js's own warnings and errors are collected (debug takes a logger).
      out.warnings = [];
      const note = (...a) => { if (out.warnings.length < 50) out.warnings.push(a.map(String).join(' ').slice(0, 300)); };
      const quiet = () => {};
      const hls = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5, backBufferLength: 10,
        debug: { trace: quiet, debug: quiet, log: quiet, info: quiet, warn: note, error: note } });
      hls.on(Hls.Events.ERROR, (_, d) => out.errors.push((d.fatal ? 'fatal ' : '') + d.type + '/' + d.details +
        (d.response && d.response.code ? ' ' + d.response.code : '') + (d.frag ? ' ' + d.frag.relurl : '') + (d.part ? ' part ' + d.part.relurl : '')));
      hls.loadSource(src);
      hls.attachMedia(v);
      v.play().catch(() => {});
      let started = 0, lastFrame = 0;
      out.maxGap = 0;
      const read = () => {
        g.drawImage(v, 0, 0, 320, 180);
        const px = g.getImageData(0, 0, 320, 40).data;
        let ms = 0;
        for (let i = 0; i < 24; i++) {
          const x = (i % 16) * 20 + 10, y = Math.floor(i / 16) * 20 + 10;
          if (px[(y * 320 + x) * 4] > 128) ms += 2 ** i;
        }
        const now = Date.now() % 16777216;
        let d = now - ms;
        if (d < 0) d += 16777216;
        return d;
      };
      await new Promise((resolve) => {
        const onFrame = () => {
          const t = performance.now();
          if (!started && v.currentTime > 0) started = t;
          // The first 3 s after the start are hls.js settling on its target latency.
          if (started && t - started > 3000) {
            out.samples.push(read());
            if (lastFrame) out.maxGap = Math.max(out.maxGap, t - lastFrame);
            lastFrame = t;
          }
          if (started && t - started > (seconds + 3) * 1000) return resolve();
          v.requestVideoFrameCallback(onFrame);
        };
        v.requestVideoFrameCallback(onFrame);
        setTimeout(resolve, (seconds + 20) * 1000);
      });
      out.latency = hls.latency;
      out.targetLatency = hls.targetLatency;
      hls.destroy();
      return out;
    }, { src, seconds });
    const s = rep.samples.filter((x) => x < 60000).sort((a, b) => a - b);
    result.frames = s.length;
    result.outliers = rep.samples.length - s.length;
    if (s.length) {
      result.p50 = s[Math.floor(s.length / 2)];
      result.p95 = s[Math.floor(s.length * 0.95)];
      result.max = s[s.length - 1];
    }
    result.maxGap = Math.round(rep.maxGap);
    result.warnings = rep.warnings;
    result.hlsLatency = rep.latency;
    result.targetLatency = rep.targetLatency;
    result.errors.push(...rep.errors);
    result.ok = s.length > 0;
  } catch (e) {
    result.errors.push('driver: ' + e.message);
  } finally {
    await browser.close().catch(() => {});
  }
  finish(result.ok ? 0 : 1);
})();
