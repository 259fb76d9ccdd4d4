// Usage: node module-binary.js <gateway base URL>
// Run by tests/Gateway.Tests/BrowserModuleTests.cs. In headless Chromium, the browser module follows one topic over
// the raw WebSocket (PushClient) and over Server-Sent Events (PushEventStream); binary payloads published over the HTTP
// API as application/octet-stream (every byte value, zero bytes, invalid UTF-8) must reach both handlers as a
// Uint8Array with the same bytes, and a JSON message between them as its JSON value, in order, once each.
// Prints "OK binary" and exits 0 on success; prints the reason and exits 1 on failure. Everything is bounded in time.
'use strict';
const { run, launch, openPage, publish } = require('./common');

async function publishBytes(base, topic, bytes) {
  const response = await fetch(new URL('/api/topics/' + encodeURIComponent(topic), base), {
    method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: bytes, signal: AbortSignal.timeout(15000),
  });
  if (!response.ok) {
    throw new Error('binary publish answered ' + response.status + ': ' + await response.text());
  }
}

run('module-binary.js', 60000, async (base) => {
  const browser = await launch();
  try {
    const { page, errors } = await openPage(browser, base);
    const topic = 'bin' + Math.random().toString(36).slice(2);
    await page.evaluate(async (t) => {
      const { PushClient, PushEventStream } = await import('/js/orleanspush.js');
      const describe = (m) => ({
        seq: m.seq,
        kind: m.data instanceof Uint8Array ? 'bytes' : 'json',
        binary: m.binary === true,
        value: m.data instanceof Uint8Array ? Array.from(m.data) : m.data,
      });
      window.viaSocket = [];
      window.viaSse = [];
      window.client = new PushClient({});
      await window.client.subscribe(t, (m) => window.viaSocket.push(describe(m)));
      await new Promise((resolve) => {
        window.stream = new PushEventStream([t], (m) => window.viaSse.push(describe(m)), { onSubscribed: resolve });
      });
    }, topic);

    const everyByte = Uint8Array.from({ length: 256 }, (_, i) => i);
    const invalidUtf8 = Uint8Array.from([0xc3, 0x28, 0x00, 0xff, 0xfe, 0x00]);
    await publishBytes(base, topic, everyByte);
    await publish(base, topic, { json: 'caf\u00e9' });
    await publishBytes(base, topic, invalidUtf8);
    const expected = [
      { seq: 1, kind: 'bytes', binary: true, value: Array.from(everyByte) },
      { seq: 2, kind: 'json', binary: false, value: { json: 'caf\u00e9' } },
      { seq: 3, kind: 'bytes', binary: true, value: Array.from(invalidUtf8) },
    ];

    await page.waitForFunction(() => window.viaSocket.length >= 3 && window.viaSse.length >= 3, null, { timeout: 30000 });
    // A duplicate of any of them would arrive before a later message: publish one more and expect exactly four.
    await publish(base, topic, { last: true });
    await page.waitForFunction(() => window.viaSocket.length >= 4 && window.viaSse.length >= 4, null, { timeout: 30000 });
    const [viaSocket, viaSse] = await page.evaluate(() => [window.viaSocket, window.viaSse]);
    for (const [name, got] of [['socket', viaSocket], ['sse', viaSse]]) {
      const want = JSON.stringify(expected.concat([{ seq: 4, kind: 'json', binary: false, value: { last: true } }]));
      if (JSON.stringify(got) !== want) {
        throw new Error(name + ' handler got ' + JSON.stringify(got) + '\n expected ' + want);
      }
    }
    if (errors.length) {
      throw new Error('page errors: ' + errors.join('; '));
    }
    console.log('OK binary ' + topic);
  } finally {
    await browser.close();
  }
});
