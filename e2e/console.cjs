// console.cjs drives Debian's Chromium with playwright-core for the war
// room console e2e tests (console_test.go).
//
//   node console.cjs WEB_DIR
//
// It reads one JSON command per line on stdin and answers each with one
// JSON line {id, ok, result, error} on stdout:
//
//   {id, op: "goto", url, allow: ["127.0.0.1:PORT"]}  open the page; requests
//                                   to any other host are refused and counted
//   {id, op: "login", token}        enter the token in the page's form
//   {id, op: "eval", js}            evaluate an async JS expression in the page
//   {id, op: "click", selector}     click the first element matching selector
//   {id, op: "screenshot", path}    full-page screenshot
//   {id, op: "quit"}                close the browser and exit
//
// Page errors, console errors, refused requests and answers with a status
// of 400 or more are in every answer (errors, blocked, httpErrors), so the
// test sees them where they happen.
'use strict';
const path = require('path');
const readline = require('readline');
const { createRequire } = require('module');

const [webDir] = process.argv.slice(2);
const req = createRequire(path.join(path.resolve(webDir), 'package.json'));
const { chromium } = req('playwright-core');

const errors = [];
const blocked = [];
const httpErrors = [];
function out(o) { process.stdout.write(JSON.stringify(o) + '\n'); }

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: 30000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  page.on('pageerror', (e) => errors.push('page: ' + e.message));
  // Failed requests are reported by URL (httpErrors), not by the
  // console's message, which does not name them.
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push('console: ' + m.text().slice(0, 300)); });
  page.on('response', (r) => { if (r.status() >= 400) httpErrors.push(r.status() + ' ' + new URL(r.url()).pathname); });
  page.on('dialog', (d) => d.accept().catch(() => {}));
  let allow = null;
  await page.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (!allow || u.protocol === 'data:' || u.protocol === 'blob:' || allow.includes(u.host)) return route.continue();
    blocked.push(u.origin + u.pathname);
    return route.abort('blockedbyclient');
  });
  const ops = {
    async goto(c) { allow = c.allow || null; await page.goto(c.url, { timeout: 15000 }); return page.url(); },
    async login(c) {
      await page.fill('#token', c.token, { timeout: 10000 });
      await page.click('#login button[type=submit]');
      await page.waitForSelector('#main:not([hidden])', { timeout: 10000 });
      return page.evaluate(() => document.body.dataset.role);
    },
    async eval(c) { return page.evaluate(c.js); },
    async click(c) { await page.click(c.selector, { timeout: 10000 }); return true; },
    async screenshot(c) { await page.screenshot({ path: c.path, fullPage: true }); return c.path; },
  };
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    let c;
    try { c = JSON.parse(line); } catch (e) { continue; }
    if (c.op === 'quit') break;
    const ans = { id: c.id, ok: true, result: null, error: '' };
    try {
      if (!ops[c.op]) throw new Error('unknown op ' + c.op);
      ans.result = await ops[c.op](c);
    } catch (e) {
      ans.ok = false;
      ans.error = String((e && e.message) || e);
    }
    ans.errors = errors.splice(0);
    ans.blocked = blocked.splice(0);
    ans.httpErrors = httpErrors.splice(0);
    out(ans);
  }
  await browser.close().catch(() => {});
  process.exit(0);
})().catch((e) => { out({ id: -1, ok: false, error: 'driver: ' + ((e && e.message) || e) }); process.exit(1); });
