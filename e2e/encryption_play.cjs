// encryption_play.cjs drives Debian's Chromium with playwright-core for the
// encryption e2e tests: it opens the reference player on a stream and
// reports, as one JSON line on stdout, whether playback advanced.
//
//   node encryption_play.cjs WEB_DIR PLAYER_URL SECONDS [--strip-key-token]
//
// WEB_DIR holds node_modules (web/, `npm ci`). The page's state is
// window.livefuse (web/player.html). With --strip-key-token, key
// requests lose their auth_key on the way (a player without a valid
// token for the keys). The run is bounded: SECONDS + 25 s at most.
'use strict';
const path = require('path');
const { createRequire } = require('module');

const [webDir, pageURL, secondsArg, ...flags] = process.argv.slice(2);
const seconds = Number(secondsArg || 10);
const stripKeyToken = flags.includes('--strip-key-token');
const req = createRequire(path.join(path.resolve(webDir), 'package.json'));
const { chromium } = req('playwright-core');

const result = { ok: false, advanced: 0, currentTime: 0, errors: [], events: [], keyResponses: [], stats: null, mse: null };

function finish(code) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(code);
}

(async () => {
  // launch() gives Chromium a fresh temporary profile of its own.
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: 30000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
      // CHROMIUM_EXTRA_ARGS: e.g. the TLS tests' --ignore-certificate-errors-spki-list (trust a test CA).
      ...(process.env.CHROMIUM_EXTRA_ARGS || '').split(' ').filter(Boolean)],
  });
  const cleanup = async () => { await browser.close().catch(() => {}); };
  try {
    const page = await browser.newPage();
    page.on('console', (m) => { if (m.type() === 'error') result.events.push('console: ' + m.text()); });
    page.on('pageerror', (e) => result.errors.push('page: ' + e.message));
    page.on('response', (r) => {
      if (r.url().includes('/keys/')) result.keyResponses.push({ url: r.url().replace(/auth_key=[^&]*/, 'auth_key=…'), status: r.status() });
    });
    if (stripKeyToken) {
      await page.route('**/keys/**', (route) => {
        const u = new URL(route.request().url());
        u.searchParams.delete('auth_key');
        route.continue({ url: u.toString() });
      });
    }
    await page.goto(pageURL, { timeout: 15000 });
    result.mse = await page.evaluate(() => ({
      avc: window.MediaSource ? MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f,mp4a.40.2"') : false,
      aac: window.MediaSource ? MediaSource.isTypeSupported('audio/mp4; codecs="mp4a.40.2"') : false,
    }));
    if (!result.mse.avc || !result.mse.aac) {
      result.errors.push('this Chromium has no MSE support for H.264/AAC: ' + JSON.stringify(result.mse));
      await cleanup();
      finish(1);
      return;
    }
    const deadline = Date.now() + (seconds + 25) * 1000;
    let start = null;
    while (Date.now() < deadline) {
      const st = await page.evaluate(() => ({
        t: document.getElementById('video').currentTime,
        errors: window.livefuse.errors.slice(),
        events: window.livefuse.events.slice(-20),
        stats: window.livefuse.stats,
      }));
      result.currentTime = st.t;
      result.events = result.events.filter((e) => e.startsWith('console')).slice(-10).concat(st.events);
      result.stats = st.stats;
      if (st.errors.length > 0) {
        result.errors.push(...st.errors);
        break;
      }
      if (start === null && st.t > 0) start = st.t;
      if (start !== null) result.advanced = st.t - start;
      if (result.advanced >= seconds) {
        result.ok = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    await cleanup();
    finish(0);
  } catch (e) {
    result.errors.push('driver: ' + (e && e.message || e));
    await cleanup();
    finish(1);
  }
})().catch((e) => {
  result.errors.push('driver: ' + (e && e.message || e));
  finish(1);
});
