// The demo page: one raw-protocol WebSocket; publishes go through the backend HTTP API.
(function () {
  'use strict';
  const log = document.getElementById('log');
  const status = document.getElementById('status');
  const $ = (id) => document.getElementById(id);
  let socket = null;
  let nextId = 1;
  const positions = new Map(); // topic -> {epoch, seq}: used to resume after a reconnect
  const wanted = new Set();

  function line(text, cls) {
    const div = document.createElement('div');
    div.className = cls;
    div.textContent = new Date().toLocaleTimeString() + '  ' + text;
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      frame.id = nextId++;
      socket.send(JSON.stringify(frame));
    }
  }

  function subscribe(topic) {
    const since = positions.get(topic);
    send(since ? { op: 'sub', topic, since } : { op: 'sub', topic });
  }

  let attempt = 0;
  function connect() {
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    socket = new WebSocket(url, 'orleanspush.v1.json');
    socket.onopen = () => {
      attempt = 0;
      status.textContent = 'connected';
      status.className = 'on';
      wanted.forEach(subscribe);
    };
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.op === 'msg') {
        positions.set(frame.topic, { epoch: frame.epoch, seq: frame.seq });
        line(frame.topic + ' #' + frame.seq + '  ' + JSON.stringify(frame.data), 'msg');
      } else if (frame.op === 'error') {
        line('error ' + frame.code + ': ' + frame.message, 'err');
      } else if (frame.op === 'bye') {
        line('server says bye (' + frame.code + '); reconnecting', 'sys');
      } else if (frame.op === 'ok' && frame.epoch !== undefined) {
        line('ok: position ' + frame.epoch + '/' + frame.seq + (frame.recovered === false ? ' (some messages could not be recovered)' : ''), 'sys');
      }
    };
    socket.onclose = () => {
      status.textContent = 'disconnected, retrying';
      status.className = 'off';
      const delay = Math.min(30000, 500 * 2 ** attempt++) * (0.5 + Math.random() / 2);
      setTimeout(connect, delay);
    };
  }

  $('subBtn').onclick = () => {
    const topic = $('subTopic').value.trim();
    wanted.add(topic);
    subscribe(topic);
    line('subscribing to ' + topic, 'sys');
  };
  $('unsubBtn').onclick = () => {
    const topic = $('subTopic').value.trim();
    wanted.delete(topic);
    send({ op: 'unsub', topic });
    line('unsubscribed from ' + topic, 'sys');
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

  connect();
}());
