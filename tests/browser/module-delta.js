// Usage: node module-delta.js <gateway base URL>
// Run by tests/Gateway.Tests/BrowserModuleTests.cs against a gateway whose `doc` namespace has delta compression.
// In headless Chromium, the browser module subscribes with { delta: true }; 1,000 randomly edited JSON documents
// (multi-byte UTF-8, surrogate pairs, escapes, irregular whitespace) are published over the HTTP API, and the handler's
// `text` must equal each published document exactly, in order, while the socket carried deltas.
// Prints "OK delta" and exits 0 on success; prints the reason and exits 1 on failure. Everything is bounded in time.
'use strict';
const { run, launch, openPage } = require('./common');

const PIECES = ['a', 'b', 'c', 'x', 'Z', ' ', 'é', 'ß', '漢', '😀', '🎮', '"', '\\', '\n', '\t', '\u0001', '{', '}', ':', ',', '0', '7', '/'];
const MESSAGES = 1000;

/** Documents that are each a few random edits of the one before (seeded, so a failure can be replayed). */
function* randomEdits(seed) {
  let state = seed;
  const random = (n) => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state % n;
  };
  const piece = () => PIECES[random(PIECES.length)];
  const body = Array.from({ length: 600 }, piece);
  for (let n = 1; ; n++) {
    if (n > 1) {
      for (let edits = 1 + random(3); edits > 0; edits--) {
        const at = random(body.length + 1);
        const op = random(3);
        if (op === 0) {
          body.splice(at, 0, ...Array.from({ length: 1 + random(11) }, piece));
        } else if (op === 1 && body.length > 20) {
          body.splice(Math.min(at, body.length - 1), 1 + random(11));
        } else if (at < body.length) {
          body[at] = piece();
        }
      }
    }
    const space = ' '.repeat(random(3));
    yield '{"n":' + n + ',' + space + '"body" :' + JSON.stringify(body.join('')) + ', "pieces":' + body.length + space + '}';
  }
}

run('module-delta.js', 150000, async (base) => {
  const browser = await launch();
  try {
    const { page, errors } = await openPage(browser, base);
    let deltaFrames = 0;
    page.on('websocket', (ws) => ws.on('framereceived', (f) => {
      if (typeof f.payload === 'string' && f.payload.includes('"delta":"') && f.payload.includes('"op":"msg"')) {
        deltaFrames++;
      }
    }));
    const topic = 'doc:' + Math.random().toString(36).slice(2);
    const ok = await page.evaluate(async (t) => {
      const { PushClient } = await import('/js/orleanspush.js');
      window.texts = [];
      window.statuses = [];
      window.client = new PushClient({ onStatus: (s, d) => { if (d) window.statuses.push(String(d)); } });
      return window.client.subscribe(t, (m) => window.texts.push(m.text), { delta: true });
    }, topic);
    if (ok.delta !== 'fossil') {
      throw new Error('the subscribe was not granted deltas: ' + JSON.stringify(ok));
    }

    const published = [];
    const feed = randomEdits(7);
    for (let i = 0; i < MESSAGES; i++) {
      const json = feed.next().value;
      published.push(json);
      const response = await fetch(new URL('/api/topics/' + encodeURIComponent(topic), base), {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: json, signal: AbortSignal.timeout(15000),
      });
      if (!response.ok) {
        throw new Error('publish answered ' + response.status + ': ' + await response.text());
      }
    }

    await page.waitForFunction((n) => window.texts.length >= n, MESSAGES, { timeout: 60000 });
    const texts = await page.evaluate(() => window.texts);
    for (let i = 0; i < MESSAGES; i++) {
      if (texts[i] !== published[i]) {
        throw new Error('message ' + (i + 1) + ' differs:\n published ' + JSON.stringify(published[i]) + '\n rebuilt   ' + JSON.stringify(texts[i]));
      }
    }
    if (texts.length !== MESSAGES) {
      throw new Error('expected ' + MESSAGES + ' messages, got ' + texts.length);
    }
    if (deltaFrames < MESSAGES * 0.9) {
      throw new Error('only ' + deltaFrames + ' of ' + MESSAGES + ' messages came as deltas');
    }
    const statuses = await page.evaluate(() => window.statuses);
    if (errors.length || statuses.length) {
      throw new Error('page errors: ' + errors.concat(statuses).join('; '));
    }
    console.log('OK delta ' + topic + ' ' + deltaFrames + ' deltas of ' + MESSAGES);
  } finally {
    await browser.close();
  }
});
