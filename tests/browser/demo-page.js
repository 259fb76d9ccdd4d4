// Usage: node demo-page.js <gateway base URL>
// Opens the demo page in headless Chromium, subscribes to a fresh topic through the page, publishes a message over the
// HTTP API, and waits for the page to show it. Prints "OK <topic>" and exits 0 on success; prints the reason and exits
// 1 on failure. Everything is bounded in time.
'use strict';
const { run, launch, openPage, publish: publishTo } = require('./common');

run('demo-page.js', 60000, async (base) => {
  const publish = (topic, data) => publishTo(base, topic, data);
  const browser = await launch();
  try {
    const { page, errors } = await openPage(browser, base);
    await page.waitForSelector('#status.on', { timeout: 20000 });

    const topic = 'browser-' + Math.random().toString(36).slice(2);
    await page.fill('#subTopic', topic);
    await page.click('#subBtn');
    await page.waitForSelector('#log .ok', { timeout: 20000 });

    const text = 'hello from node ' + Date.now();
    await publish(topic, { text });

    const shown = await page.waitForSelector(`#log .msg >> text=${text}`, { timeout: 20000 });
    const line = await shown.textContent();
    if (!line.includes(topic + ' #1')) {
      throw new Error('unexpected line: ' + line);
    }

    // Cut the socket: the client reconnects (jittered backoff) and resumes the topic with since, so a message
    // published meanwhile still arrives, once.
    await page.evaluate(() => window.orleansPush._socket.close());
    const text2 = 'while away ' + Date.now();
    await publish(topic, { text: text2 });
    await page.waitForSelector(`#log .msg >> text=${text2}`, { timeout: 20000 });
    await page.waitForSelector('#status.on', { timeout: 20000 });
    const lines = await page.$$eval('#log .msg', (els) => els.map((e) => e.textContent));
    const ones = lines.filter((l) => l.includes(topic + ' #1')).length;
    const twos = lines.filter((l) => l.includes(topic + ' #2')).length;
    if (ones !== 1 || twos !== 1) {
      throw new Error('expected #1 and #2 once each, got: ' + JSON.stringify(lines));
    }

    // A gap history cannot fill is surfaced (recovered:false), never skipped in silence: subscribe to a topic of the
    // "tiny" namespace (2 messages of history), go offline for a while, let 5 messages pass, and come back.
    const tiny = 'tiny:' + Math.random().toString(36).slice(2);
    await page.fill('#subTopic', tiny);
    await page.click('#subBtn');
    await page.waitForFunction((t) => [...document.querySelectorAll('#log .ok')].some((e) => e.textContent.includes(t)), tiny, { timeout: 20000 });
    await publish(tiny, { n: 1 });
    await page.waitForSelector(`#log .msg >> text=${tiny} #1`, { timeout: 20000 });
    await page.evaluate(() => {
      window.orleansPush.options.reconnectBaseDelay = 4000; // offline for 2-4 s
      window.orleansPush._socket.close();
    });
    for (let n = 2; n <= 6; n++) {
      await publish(tiny, { n });
    }
    await page.waitForSelector(`#log .err >> text=recovered:false`, { timeout: 20000 });
    if (errors.length) {
      throw new Error('page errors: ' + errors.join('; '));
    }
    console.log('OK ' + topic);
  } finally {
    await browser.close();
  }
});
