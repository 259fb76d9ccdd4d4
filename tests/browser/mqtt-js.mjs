// MQTT.js against the gateway (run by tests/Gateway.Tests/PlainMqttTests.cs): a subscriber gets the topic's retained
// (latest) value with the retain flag, then the will of a client that is killed (no DISCONNECT).
// usage: node mqtt-js.mjs <mqtt port> <retained topic> <expected retained payload> <will topic>
import { spawn } from 'node:child_process';
import mqtt from 'mqtt';

const [port, retainedTopic, expected, willTopic] = process.argv.slice(2);
const url = `mqtt://127.0.0.1:${port}`;
const fail = (why) => { console.error(why); process.exit(1); };
setTimeout(() => fail('timed out'), 30000).unref();

if (process.argv[6] === '--will-client') {
  // The client that will be killed: MQTT 3.1.1, no client id, a will; it stays until killed.
  const c = mqtt.connect(url, { protocolVersion: 4, clientId: '', clean: true, will: { topic: willTopic, payload: '{"gone":"mqtt.js"}', qos: 1 } });
  c.on('connect', () => console.log('connected'));
  c.on('error', (e) => fail(String(e)));
  await new Promise(() => {});
}

const subscriber = mqtt.connect(url, { protocolVersion: 5, clientId: '' });
subscriber.on('error', (e) => fail(String(e)));
await new Promise((resolve) => subscriber.on('connect', resolve));
const messages = [];
const waiters = [];
subscriber.on('message', (topic, payload, packet) => {
  messages.push({ topic, payload: payload.toString(), retain: packet.retain });
  waiters.splice(0).forEach((w) => w());
});
const next = async () => {
  while (messages.length === 0) await new Promise((r) => waiters.push(r));
  return messages.shift();
};

await subscriber.subscribeAsync(retainedTopic, { qos: 1 });
const retained = await next();
if (retained.topic !== retainedTopic || retained.payload !== expected || retained.retain !== true) fail('retained: ' + JSON.stringify(retained));
console.log('retained ok');

await subscriber.subscribeAsync(willTopic, { qos: 1 });
const child = spawn(process.execPath, [process.argv[1], port, retainedTopic, expected, willTopic, '--will-client'], { stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise((resolve) => child.stdout.on('data', (d) => { if (String(d).includes('connected')) resolve(); }));
process.kill(child.pid, 'SIGKILL');
const will = await next();
if (will.topic !== willTopic || will.payload !== '{"gone":"mqtt.js"}') fail('will: ' + JSON.stringify(will));
console.log('will ok');
await subscriber.endAsync();
process.exit(0);
