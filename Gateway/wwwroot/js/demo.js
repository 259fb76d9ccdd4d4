// The demo page: subscribes through the reusable client module (/js/orleanspush.js); publishes go through the
// backend HTTP API, as a backend would publish.
import { PushClient, PushEventStream } from './orleanspush.js';

const log = document.getElementById('log');
const status = document.getElementById('status');
const $ = (id) => document.getElementById(id);

function line(text, cls) {
  const div = document.createElement('div');
  div.className = cls;
  div.textContent = new Date().toLocaleTimeString() + '  ' + text;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
}

const user = new URLSearchParams(location.search).get('user') || undefined;
const client = new PushClient({
  user,
  onStatus: (state, detail) => {
    status.textContent = state === 'open' ? 'connected' : state === 'connecting' ? 'connecting…' : 'disconnected, retrying';
    status.className = state === 'open' ? 'on' : 'off';
    if (detail && detail.op === 'bye') {
      line('server says bye (' + detail.code + '); reconnecting', 'sys');
    }
  },
  onRecoveryFailed: (gap) => line(gap.topic + ': messages after ' + (gap.lastSeen ? gap.lastSeen.epoch + '/' + gap.lastSeen.seq : 'the start')
    + ' could not be recovered (recovered:false); now at ' + gap.now.epoch + '/' + gap.now.seq, 'err'),
});

window.orleansPush = client; // for the browser test and for poking at from the developer console

$('subBtn').onclick = async () => {
  const topic = $('subTopic').value.trim();
  line('subscribing to ' + topic, 'sys');
  try {
    const ok = await client.subscribe(topic, (m) => line(m.topic + ' #' + m.seq + '  ' + JSON.stringify(m.data), 'msg'));
    line('subscribed to ' + topic + ' at ' + ok.epoch + '/' + ok.seq, 'sys ok');
  } catch (e) {
    line('subscribe refused: ' + e.message, 'err');
  }
};
$('unsubBtn').onclick = async () => {
  const topic = $('subTopic').value.trim();
  try {
    await client.unsubscribe(topic);
    line('unsubscribed from ' + topic, 'sys');
  } catch (e) {
    line('unsubscribe failed: ' + e.message, 'err');
  }
};
$('pubBtn').onclick = async () => {
  const topic = $('pubTopic').value.trim();
  try {
    const response = await fetch('/api/topics/' + topic, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: $('pubData').value,
    });
    const body = await response.json();
    if (response.ok) {
      line('published to ' + body.topic + ' as #' + body.seq, 'sys');
    } else {
      line('publish refused: ' + body.error + ': ' + body.message, 'err');
    }
  } catch (e) {
    line('publish failed: ' + e, 'err');
  }
};

// The same topics over Server-Sent Events: messages arrive at EventSource.onmessage (inside PushEventStream).
let stream = null;
$('sseBtn').onclick = () => {
  if (stream) {
    stream.close();
  }
  const topic = $('sseTopic').value.trim();
  line('opening an SSE stream of ' + topic, 'sys');
  stream = new PushEventStream([topic], (m) => line('[sse] ' + m.topic + ' #' + m.seq + '  ' + JSON.stringify(m.data), 'msg sse'), {
    user,
    onSubscribed: (s) => line('[sse] subscribed to ' + s.topic + ' at ' + s.epoch + '/' + s.seq, 'sys'),
    onRecoveryFailed: (gap) => line('[sse] ' + gap.topic + ': missed messages could not be recovered; now at '
      + gap.now.epoch + '/' + gap.now.seq, 'err'),
  });
};
$('sseCloseBtn').onclick = () => {
  if (stream) {
    stream.close();
    stream = null;
    line('SSE stream closed', 'sys');
  }
};
