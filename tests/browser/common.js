// Shared by the browser scripts: a bounded run, headless Chromium as the tests launch it, and the HTTP API.
'use strict';
const { chromium } = require('playwright-core');

/** Runs main(base) with the gateway base URL from argv, bounded by timeoutMs; exits 0 on success, 1 on failure. */
function run(script, timeoutMs, main) {
  const base = process.argv[2];
  if (!base) {
    console.error('usage: node ' + script + ' <base url>');
    process.exit(2);
  }
  const deadline = setTimeout(() => {
    console.error('FAIL: timed out');
    process.exit(1);
  }, timeoutMs);
  main(base).then(() => {
    clearTimeout(deadline);
    process.exit(0);
  }, (e) => {
    console.error('FAIL: ' + (e && e.stack || e));
    process.exit(1);
  });
}

function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    timeout: 30000,
  });
}

/** A new page of the gateway's demo page (with the browser module at /js/orleanspush.js); errors collects page errors. */
async function openPage(browser, base) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(new URL('/', base).toString(), { timeout: 20000 });
  return { page, errors };
}

/** POSTs JSON (or nothing) to the gateway; throws unless it answers 2xx; returns the JSON answer, if any. */
async function post(base, path, body) {
  const response = await fetch(new URL(path, base), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15000),
  });
  if (!response.ok) {
    throw new Error(path + ' answered ' + response.status + ': ' + await response.text());
  }
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

const publish = (base, topic, data) => post(base, '/api/topics/' + encodeURIComponent(topic), data);

module.exports = { run, launch, openPage, post, publish };
