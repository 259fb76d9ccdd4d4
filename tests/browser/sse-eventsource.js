// Usage: node sse-eventsource.js <gateway base URL>
// Run by tests/Gateway.Tests/BrowserSseTests.cs against a gateway with a test-only endpoint that ends a user's streams.
// In headless Chromium:
//  1. a plain EventSource whose only message handler is onmessage receives published messages, in order;
//  2. the gateway ends the stream (bye); the EventSource reconnects by itself with Last-Event-ID and receives the
//     messages published meanwhile, each once, with a `subscribed` event saying recovered:true;
//  3. the browser module's PushEventStream does the same for its handler.
// Prints "OK sse" and exits 0 on success; prints the reason and exits 1 on failure. Everything is bounded in time.
'use strict';
const { run, launch, openPage, post: postTo, publish: publishTo } = require('./common');

run('sse-eventsource.js', 80000, async (base) => {
  const post = (path, body) => postTo(base, path, body);
  const publish = (topic, data) => publishTo(base, topic, data);
  const browser = await launch();
  try {
    const { page, errors } = await openPage(browser, base);

    // 1. A plain EventSource: messages arrive at onmessage.
    const topic = 'sse-' + Math.random().toString(36).slice(2);
    const user = 'es-' + Math.random().toString(36).slice(2);
    await page.evaluate(([t, u]) => {
      window.got = [];
      window.subscribed = [];
      window.ids = [];
      const source = new EventSource('/sse?topic=' + encodeURIComponent(t) + '&user=' + encodeURIComponent(u));
      source.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.topic === t) {
          window.got.push(m.seq + '=' + JSON.stringify(m.data));
          window.ids.push(e.lastEventId);
        }
      };
      source.addEventListener('subscribed', (e) => window.subscribed.push(JSON.parse(e.data)));
      window.source = source;
    }, [topic, user]);
    await page.waitForFunction((t) => window.subscribed.some((s) => s.topic === t), topic, { timeout: 20000 });
    for (let n = 1; n <= 3; n++) {
      await publish(topic, { n });
    }
    await page.waitForFunction(() => window.got.length >= 3, null, { timeout: 20000 });

    // 2. The gateway ends the stream; what is published before the EventSource comes back is replayed on its resume.
    await post('/test/close?user=' + encodeURIComponent(user));
    for (let n = 4; n <= 6; n++) {
      await publish(topic, { n });
    }
    await page.waitForFunction((t) => window.got.length >= 6 && window.subscribed.filter((s) => s.topic === t).length >= 2,
      topic, { timeout: 30000 });
    const got = await page.evaluate(() => window.got);
    const expected = [1, 2, 3, 4, 5, 6].map((n) => n + '={"n":' + n + '}');
    if (JSON.stringify(got) !== JSON.stringify(expected)) {
      throw new Error('EventSource: expected ' + JSON.stringify(expected) + ', saw ' + JSON.stringify(got));
    }
    const resumed = await page.evaluate((t) => window.subscribed.filter((s) => s.topic === t)[1], topic);
    if (resumed.recovered !== true) {
      throw new Error('EventSource: the resume was not a recovery: ' + JSON.stringify(resumed));
    }
    const ids = await page.evaluate(() => window.ids);
    if (!ids[5] || !ids[5].includes(topic + '=')) {
      throw new Error('EventSource: events carry no position id: ' + JSON.stringify(ids));
    }

    // 3. The browser module's PushEventStream.
    const topic2 = 'sse-' + Math.random().toString(36).slice(2);
    const user2 = 'es-' + Math.random().toString(36).slice(2);
    await page.evaluate(async ([t, u]) => {
      const { PushEventStream } = await import('/js/orleanspush.js');
      window.got2 = [];
      window.subscribed2 = [];
      window.stream = new PushEventStream([t], (m) => { if (m.topic === t) window.got2.push(m.seq + '=' + JSON.stringify(m.data)); },
        { user: u, onSubscribed: (s) => window.subscribed2.push(s) });
    }, [topic2, user2]);
    await page.waitForFunction((t) => window.subscribed2.some((s) => s.topic === t), topic2, { timeout: 20000 });
    await publish(topic2, { n: 1 });
    await page.waitForFunction(() => window.got2.length >= 1, null, { timeout: 20000 });
    await post('/test/close?user=' + encodeURIComponent(user2));
    await publish(topic2, { n: 2 });
    await page.waitForFunction(() => window.got2.length >= 2, null, { timeout: 30000 });
    const got2 = await page.evaluate(() => window.got2);
    if (JSON.stringify(got2) !== JSON.stringify(['1={"n":1}', '2={"n":2}'])) {
      throw new Error('PushEventStream: saw ' + JSON.stringify(got2));
    }
    if (errors.length) {
      throw new Error('page errors: ' + errors.join('; '));
    }
    console.log('OK sse ' + topic + ' ' + JSON.stringify(got));
  } finally {
    await browser.close();
  }
});
