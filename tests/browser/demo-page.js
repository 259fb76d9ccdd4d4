// Usage: node demo-page.js <gateway base URL>
// Opens the demo page in headless Chromium, subscribes to a fresh topic through the page, publishes a message over the
// HTTP API, and waits for the page to show it. Prints "OK <topic>" and exits 0 on success; prints the reason and exits
// 1 on failure. Everything is bounded in time.
'use strict';
const { chromium } = require('playwright-core');

const base = process.argv[2];
if (!base) {
  console.error('usage: node demo-page.js <base url>');
  process.exit(2);
}

const deadline = setTimeout(() => {
  console.error('FAIL: timed out');
  process.exit(1);
}, 60000);

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    timeout: 30000,
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(new URL('/', base).toString(), { timeout: 20000 });
    await page.waitForSelector('#status.on', { timeout: 20000 });

    const topic = 'browser-' + Math.random().toString(36).slice(2);
    await page.fill('#subTopic', topic);
    await page.click('#subBtn');
    await page.waitForSelector('#log .ok', { timeout: 20000 });

    const text = 'hello from node ' + Date.now();
    const response = await fetch(new URL('/api/topics/' + topic, base), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ text }),
      signal: AbortSignal.timeout(15000),
    });
    if (!response.ok) {
      throw new Error('publish answered ' + response.status);
    }

    const shown = await page.waitForSelector(`#log .msg >> text=${text}`, { timeout: 20000 });
    const line = await shown.textContent();
    if (!line.includes(topic + ' #1')) {
      throw new Error('unexpected line: ' + line);
    }
    if (errors.length) {
      throw new Error('page errors: ' + errors.join('; '));
    }
    console.log('OK ' + topic);
  } finally {
    await browser.close();
  }
}

main().then(() => {
  clearTimeout(deadline);
  process.exit(0);
}, (e) => {
  console.error('FAIL: ' + (e && e.stack || e));
  process.exit(1);
});
