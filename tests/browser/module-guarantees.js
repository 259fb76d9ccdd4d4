// Usage: node module-guarantees.js <gateway base URL>
// Run by tests/Gateway.Tests/BrowserModuleTests.cs against a gateway with test-only fault endpoints (/test/...).
// In headless Chromium, the browser module (/js/orleanspush.js):
//  1. follows a topic whose history is then lost: the new epoch arrives from its seq 1 and onRecoveryFailed reports it;
//  2. follows a tiny-history topic whose messages 2..5 never reach the gateway: the gateway resets the subscription,
//     the module subscribes again with since by itself, onRecoveryFailed reports it, and later messages arrive.
// Prints "OK module" and exits 0 on success; prints the reason and exits 1 on failure. Everything is bounded in time.
'use strict';
const { run, launch, openPage, post: postTo, publish: publishTo } = require('./common');

run('module-guarantees.js', 80000, async (base) => {
  const post = (path, body) => postTo(base, path, body);
  const publish = (topic, data) => publishTo(base, topic, data);
  const browser = await launch();
  try {
    const { page, errors } = await openPage(browser, base);
    await page.evaluate(async () => {
      const { PushClient } = await import('/js/orleanspush.js');
      window.seen = {};
      window.gaps = [];
      window.client = new PushClient({ reconnectBaseDelay: 200, onRecoveryFailed: (gap) => window.gaps.push(gap) });
      window.follow = (topic) => window.client.subscribe(topic, (m) => (window.seen[topic] ||= []).push(m.epoch + ':' + m.seq));
    });
    const seen = (topic) => page.evaluate((t) => window.seen[t] || [], topic);
    const waitSeen = (topic, count) =>
      page.waitForFunction(([t, n]) => (window.seen[t] || []).length >= n, [topic, count], { timeout: 20000 });

    // 1. An epoch change is a failed recovery, and the new epoch is delivered from its seq 1.
    const topic = 'epoch-' + Math.random().toString(36).slice(2);
    await page.evaluate((t) => window.follow(t), topic);
    const old = await publish(topic, { n: 1 });
    await waitSeen(topic, 1);
    await post('/test/new-epoch?topic=' + encodeURIComponent(topic));
    const n1 = await publish(topic, { n: 'new1' });
    await publish(topic, { n: 'new2' });
    if (n1.epoch === old.epoch || n1.seq !== 1) {
      throw new Error('the topic did not start a new epoch: ' + JSON.stringify(n1));
    }
    await post('/test/renew'); // the gateway finds the new epoch at its lease renewal
    await waitSeen(topic, 3);
    const epochSeen = await seen(topic);
    const expected = [old.epoch + ':1', n1.epoch + ':1', n1.epoch + ':2'];
    if (JSON.stringify(epochSeen) !== JSON.stringify(expected)) {
      throw new Error('epoch: expected ' + JSON.stringify(expected) + ', saw ' + JSON.stringify(epochSeen));
    }
    let gaps = await page.evaluate(() => window.gaps);
    if (gaps.length !== 1 || gaps[0].topic !== topic || gaps[0].lastSeen.epoch !== old.epoch || gaps[0].now.epoch !== n1.epoch) {
      throw new Error('epoch: expected one failed recovery, got ' + JSON.stringify(gaps));
    }

    // 2. A reset: the module subscribes again with since, reports recovered:false, and goes on receiving.
    const tiny = 'tiny:' + Math.random().toString(36).slice(2);
    await page.evaluate((t) => window.follow(t), tiny);
    await publish(tiny, 1);
    await waitSeen(tiny, 1);
    await post('/test/lose?topic=' + encodeURIComponent(tiny) + '&from=2&to=5');
    for (let n = 2; n <= 8; n++) {
      await publish(tiny, n);
    }
    await page.waitForFunction((t) => window.gaps.some((g) => g.topic === t), tiny, { timeout: 20000 });
    await publish(tiny, 9);
    await page.waitForFunction((t) => (window.seen[t] || []).some((s) => s.endsWith(':9')), tiny, { timeout: 20000 });
    const tinySeen = (await seen(tiny)).map((s) => Number(s.split(':')[1]));
    const sorted = [...tinySeen].sort((a, b) => a - b);
    // 2 and 3 are gone for good (history keeps 3 messages when 6 comes); what history still had is replayed, in order.
    if (JSON.stringify(tinySeen) !== JSON.stringify(sorted) || new Set(tinySeen).size !== tinySeen.length
      || tinySeen[0] !== 1 || tinySeen.some((s) => s === 2 || s === 3) || !tinySeen.includes(8) || tinySeen[tinySeen.length - 1] !== 9) {
      throw new Error('reset: saw ' + JSON.stringify(tinySeen));
    }
    gaps = await page.evaluate((t) => window.gaps.filter((g) => g.topic === t), tiny);
    if (gaps.length !== 1 || gaps[0].lastSeen.seq !== 1) {
      throw new Error('reset: expected one failed recovery from seq 1, got ' + JSON.stringify(gaps));
    }
    if (errors.length) {
      throw new Error('page errors: ' + errors.join('; '));
    }
    console.log('OK module ' + topic + ' ' + tiny + ' ' + JSON.stringify(tinySeen));
  } finally {
    await browser.close();
  }
});
