// player_sdk.cjs drives Debian's Chromium with playwright-core for the
// player SDK e2e tests (player_sdk_test.go).
//
//   node player_sdk.cjs WEB_DIR SPEC_JSON
//
// SPEC: {url, seconds, allow: ["127.0.0.1:PORT", ...], screenshot, evalAtEnd}.
// It opens url (the reference page, /player/?stream=...), and every 300 ms
// prints one JSON line with the page's state (the SDK controller's stats
// and the video's currentTime). It ends when it reads "quit" on stdin or
// after SECONDS, then prints a last line {"final": true, ...} with the
// result of evalAtEnd (an async JS expression evaluated in the page), the
// requests refused because their host was not in allow (when allow is
// given: the page must not need any other route), every host the page
// asked for (hosts), and the screenshot path.
'use strict';
const path = require('path');
const readline = require('readline');
const { createRequire } = require('module');

const [webDir, specJSON] = process.argv.slice(2);
const spec = JSON.parse(specJSON);
const req = createRequire(path.join(path.resolve(webDir), 'package.json'));
const { chromium } = req('playwright-core');

const final = { final: true, errors: [], blocked: [], hosts: [], evalResult: null, screenshot: '', last: null };
const hosts = new Set(); // every host the page asked for
function out(o) { process.stdout.write(JSON.stringify(o) + '\n'); }

let quit = false;
readline.createInterface({ input: process.stdin }).on('line', (l) => { if (l.trim() === 'quit') quit = true; });

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
    page.on('pageerror', (e) => final.errors.push('page: ' + e.message));
    page.on('console', (m) => { if (m.type() === 'error') final.errors.push('console: ' + m.text().slice(0, 300)); });
    if (spec.allow && spec.allow.length) {
      await page.route('**/*', (route) => {
        const u = new URL(route.request().url());
        if (u.host) hosts.add(u.host);
        if (u.protocol === 'data:' || u.protocol === 'blob:' || spec.allow.includes(u.host)) return route.continue();
        final.blocked.push(u.origin + u.pathname);
        return route.abort('blockedbyclient');
      });
    }
    await page.goto(spec.url, { timeout: 15000 });
    const deadline = Date.now() + (spec.seconds || 60) * 1000;
    while (!quit && Date.now() < deadline) {
      const st = await page.evaluate(() => {
        const c = window.livefuse && window.livefuse.controller;
        const v = document.getElementById('video');
        if (!c) return { ct: v.currentTime, ready: false };
        const s = c.stats();
        s.events = s.events.slice(-8);
        return Object.assign({ ct: v.currentTime, ready: true }, s);
      }).catch((e) => ({ evalError: String(e && e.message || e) }));
      final.last = st;
      out(st);
      await new Promise((r) => setTimeout(r, 300));
    }
    if (spec.evalAtEnd) {
      final.evalResult = await page.evaluate(spec.evalAtEnd).catch((e) => ({ error: String(e && e.message || e) }));
    }
    final.events = await page.evaluate(() => window.livefuse && window.livefuse.controller ? window.livefuse.controller.state.events.slice(-60) : []).catch(() => []);
    if (spec.screenshot) {
      await page.screenshot({ path: spec.screenshot }).then(() => { final.screenshot = spec.screenshot; }, () => {});
    }
  } catch (e) {
    final.errors.push('driver: ' + (e && e.message || e));
  }
  final.hosts = [...hosts].sort();
  await browser.close().catch(() => {});
  out(final);
  process.exit(0);
})();
