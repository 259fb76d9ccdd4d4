// OrleansPush browser client: the raw WebSocket protocol (orleanspush.v1.json), no build step, a plain ES module.
//
//   import { PushClient } from '/js/orleanspush.js';
//   const client = new PushClient({ onRecoveryFailed: (gap) => reload(gap.topic) });
//   await client.subscribe('news', (m) => console.log(m.topic, m.seq, m.data));
//
// Where a WebSocket is not wanted (receive only), PushEventStream follows topics over Server-Sent Events (GET /sse)
// with the browser's own EventSource, which reconnects and resumes by itself (Last-Event-ID):
//
//   const stream = new PushEventStream(['news'], (m) => console.log(m.topic, m.seq, m.data));
//
// Guarantees: per topic, the handler sees messages in seq order, each once. After a disconnect the client reconnects
// with jittered exponential backoff and resubscribes every topic with `since` = the last position it saw, so nothing
// still in history is missed. Never a silent gap: onRecoveryFailed is called with the topic and both positions when
// history cannot fill a gap (the server answers recovered:false), when a topic's epoch changes (its history was lost;
// the new epoch arrives from its seq 1), and when the server ends a subscription with `reset` (a message it missed
// cannot be filled), after which the client subscribes again with `since` by itself.
//
// Delta compression (namespaces with Delta on): subscribe(topic, handler, { delta: true }) asks for Fossil deltas; the
// module applies them, and the handler gets `data` and `text`, the publisher's JSON exactly as published.
//
// Binary payloads (published as application/octet-stream, or over MQTT when not one JSON value) arrive as a
// Uint8Array in `data`, with `binary: true`; the wire carries them as base64 in `data_b64`.

import { applyDelta } from './fossil.js';

const SUBPROTOCOL = 'orleanspush.v1.json';
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });

/** The base64 of a frame's data_b64 as the bytes published. */
function fromBase64(base64) {
  const chars = atob(base64);
  const bytes = new Uint8Array(chars.length);
  for (let i = 0; i < chars.length; i++) {
    bytes[i] = chars.charCodeAt(i);
  }
  return bytes;
}

/** The message a handler gets from a msg frame (raw WebSocket or SSE): data is the JSON value, or a Uint8Array. */
function messageOf(frame) {
  const m = { topic: frame.topic, epoch: frame.epoch, seq: frame.seq, data: frame.data };
  if (typeof frame.data_b64 === 'string') {
    m.data = fromBase64(frame.data_b64);
    m.binary = true;
  }
  return m;
}

/** Calls options[name](...args) when set; an exception it throws is rethrown outside, so it cannot break the client. */
function notify(options, name, args) {
  const callback = options[name];
  if (typeof callback === 'function') {
    try {
      callback(...args);
    } catch (e) {
      setTimeout(() => { throw e; });
    }
  }
}

/** An error answer of the server: `code` is one of bad_request, bad_topic, forbidden, unavailable, ... */
export class PushError extends Error {
  constructor(code, message) {
    super(code + ': ' + message);
    this.name = 'PushError';
    this.code = code;
  }
}

export class PushClient {
  /**
   * @param {object} [options]
   * @param {string} [options.url] WebSocket URL; default: /ws on this page's host (ws: or wss: to match the page).
   * @param {string} [options.user] development identity (?user=), for gateways running open.
   * @param {() => (string|null|Promise<string|null>)} [options.accessToken] called before each connect; sent as access_token.
   * @param {number} [options.reconnectBaseDelay] first reconnect delay in ms (default 500), doubled per failed attempt.
   * @param {number} [options.reconnectMaxDelay] cap of the reconnect delay in ms (default 30000).
   * @param {(state: 'connecting'|'open'|'closed', detail?: any) => void} [options.onStatus]
   * @param {(gap: {topic: string, lastSeen: {epoch: string, seq: number}|null, now: {epoch: string, seq: number}}) => void} [options.onRecoveryFailed]
   */
  constructor(options = {}) {
    this.options = Object.assign({ reconnectBaseDelay: 500, reconnectMaxDelay: 30000 }, options);
    this._topics = new Map(); // topic -> { handler, position: {epoch, seq}|null }
    this._pending = new Map(); // request id -> { resolve, reject }
    this._queue = []; // frames waiting for the socket to open
    this._nextId = 1;
    this._attempt = 0;
    this._socket = null;
    this._timer = null;
    this._closed = false;
    this._connect();
  }

  /** Subscribes; resolves with {epoch, seq, recovered?} once the server confirmed (after any replay). While offline,
   * it resolves when the subscribe went through after the next connect.
   * @param {{delta?: boolean}} [options] delta: ask for Fossil deltas (the answer says `delta:"fossil"` when granted). */
  subscribe(topic, handler, options = {}) {
    let entry = this._topics.get(topic);
    if (entry) {
      entry.handler = handler;
    } else {
      entry = { handler, position: null, waiters: [], gapReported: false, delta: !!options.delta, base: null };
      this._topics.set(topic, entry);
    }
    if (!this._isOpen()) {
      return new Promise((resolve, reject) => entry.waiters.push({ resolve, reject }));
    }
    return this._subscribe(topic);
  }

  unsubscribe(topic) {
    this._topics.delete(topic);
    return this._request({ op: 'unsub', topic });
  }

  /** A client publish, where the topic's namespace allows it; resolves with {epoch, seq}. */
  publish(topic, data) {
    return this._request({ op: 'pub', topic, data });
  }

  /** The last position seen on a topic, or null. */
  position(topic) {
    const entry = this._topics.get(topic);
    return entry && entry.position ? Object.assign({}, entry.position) : null;
  }

  close() {
    this._closed = true;
    clearTimeout(this._timer);
    if (this._socket) {
      this._socket.close(1000);
    }
    this._failPending(new PushError('unavailable', 'The client was closed.'));
  }

  _subscribe(topic) {
    const entry = this._topics.get(topic);
    const frame = { op: 'sub', topic };
    if (entry && entry.delta) {
      frame.delta = 'fossil';
    }
    if (entry && entry.position) {
      frame.since = entry.position;
    }
    const since = frame.since || null;
    return this._request(frame, topic).then((ok) => {
      const current = this._topics.get(topic);
      if (current) {
        const reported = current.gapReported;
        current.gapReported = false;
        if (ok.recovered === false) {
          if (!reported) {
            this._notify('onRecoveryFailed', { topic, lastSeen: since, now: { epoch: ok.epoch, seq: ok.seq } });
          }
          if (!current.position || current.position.epoch !== ok.epoch || current.position.seq < ok.seq) {
            current.position = { epoch: ok.epoch, seq: ok.seq };
          }
        } else if (!current.position || current.position.epoch !== ok.epoch || current.position.seq < ok.seq) {
          current.position = { epoch: ok.epoch, seq: ok.seq };
        }
      }
      return ok;
    });
  }

  _request(frame, subscribing) {
    frame.id = this._nextId++;
    return new Promise((resolve, reject) => {
      this._pending.set(frame.id, { resolve, reject, subscribing });
      this._send(frame);
    });
  }

  _isOpen() {
    return !!this._socket && this._socket.readyState === WebSocket.OPEN;
  }

  _send(frame) {
    if (this._isOpen()) {
      this._socket.send(JSON.stringify(frame));
    } else {
      this._queue.push(frame);
    }
  }

  async _connect() {
    if (this._closed) {
      return;
    }
    this._notify('onStatus', 'connecting');
    let url = this.options.url || ((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
    const query = [];
    if (this.options.user) {
      query.push('user=' + encodeURIComponent(this.options.user));
    }
    try {
      const token = this.options.accessToken ? await this.options.accessToken() : null;
      if (token) {
        query.push('access_token=' + encodeURIComponent(token));
      }
    } catch (e) {
      this._scheduleReconnect(e);
      return;
    }
    if (query.length) {
      url += (url.includes('?') ? '&' : '?') + query.join('&');
    }

    const socket = new WebSocket(url, SUBPROTOCOL);
    this._socket = socket;
    socket.onopen = () => {
      this._attempt = 0;
      this._notify('onStatus', 'open');
      // Requests asked for while offline go first; then every topic resumes from where it was.
      const queued = this._queue;
      this._queue = [];
      queued.forEach((f) => socket.send(JSON.stringify(f)));
      for (const [topic, entry] of this._topics) {
        const waiters = entry.waiters.splice(0);
        this._subscribe(topic).then(
          (ok) => waiters.forEach((w) => w.resolve(ok)),
          (e) => {
            waiters.forEach((w) => w.reject(e));
            this._notify('onStatus', 'open', e);
          });
      }
    };
    socket.onmessage = (event) => this._onFrame(JSON.parse(event.data));
    socket.onclose = (event) => {
      if (this._socket !== socket) {
        return;
      }
      this._socket = null;
      // Requests in flight get no answer now; subscriptions are renewed on reconnect.
      this._failPending(new PushError('unavailable', 'The connection closed.'), true);
      this._scheduleReconnect(event);
    };
  }

  _onFrame(frame) {
    switch (frame.op) {
      case 'msg': {
        const entry = this._topics.get(frame.topic);
        if (!entry) {
          return;
        }
        let text;
        if (frame.text !== undefined || frame.delta !== undefined) {
          text = this._rebuild(entry, frame);
          if (text === null) {
            return;
          }
        }
        const p = entry.position;
        if (p && p.epoch === frame.epoch && frame.seq <= p.seq) {
          return; // seen already (a replay overlapping the live flow)
        }
        if (p && p.epoch !== frame.epoch) {
          // The topic's history was lost and a new epoch began: what came after lastSeen may be gone.
          entry.gapReported = true;
          this._notify('onRecoveryFailed', { topic: frame.topic, lastSeen: p, now: { epoch: frame.epoch, seq: frame.seq - 1 } });
        }
        entry.position = { epoch: frame.epoch, seq: frame.seq };
        try {
          const m = messageOf(frame);
          if (text !== undefined) {
            m.text = text;
            m.data = JSON.parse(text);
          }
          entry.handler(m);
        } catch (e) {
          setTimeout(() => { throw e; });
        }
        return;
      }
      case 'ok':
      case 'error': {
        const pending = this._pending.get(frame.id);
        if (!pending) {
          return;
        }
        this._pending.delete(frame.id);
        if (frame.op === 'ok') {
          pending.resolve(frame);
        } else {
          pending.reject(new PushError(frame.code, frame.message));
        }
        return;
      }
      case 'reset': {
        // The server ended the subscription: a message it missed cannot be filled. Subscribe again from the last
        // position seen; the answer says recovered:false, which onRecoveryFailed reports.
        if (this._topics.has(frame.topic)) {
          this._subscribe(frame.topic).catch((e) => this._notify('onStatus', 'open', e));
        }
        return;
      }
      case 'bye':
        // The gateway is draining or found us slow: reconnect (elsewhere) and resume.
        this._notify('onStatus', 'closed', frame);
        if (this._socket) {
          this._socket.close(1000);
        }
        return;
      default:
        return;
    }
  }

  /** The publisher's JSON text of a delta subscription's message: `text` whole, or `delta` (one byte per character)
   * applied to the bytes of the message before. Null when it cannot be rebuilt (the module does not hold seq - 1, which
   * the gateway never lets happen): reported to onStatus, and the topic is subscribed again, which sends it whole. */
  _rebuild(entry, frame) {
    try {
      let bytes;
      if (frame.text !== undefined) {
        bytes = utf8.encode(frame.text);
      } else if (entry.base && entry.base.epoch === frame.epoch && entry.base.seq === frame.seq - 1) {
        const delta = new Uint8Array(frame.delta.length);
        for (let i = 0; i < delta.length; i++) {
          delta[i] = frame.delta.charCodeAt(i);
        }
        bytes = applyDelta(entry.base.bytes, delta);
      } else {
        throw new Error('a delta for seq ' + frame.seq + ' came without seq ' + (frame.seq - 1));
      }
      const text = fromUtf8.decode(bytes);
      entry.base = { epoch: frame.epoch, seq: frame.seq, bytes };
      return text;
    } catch (e) {
      entry.base = null;
      this._notify('onStatus', 'open', e);
      this._subscribe(frame.topic).catch((err) => this._notify('onStatus', 'open', err));
      return null;
    }
  }

  /** Rejects what waits for an answer; a subscribe in flight instead waits for the next connect, where it is sent
   * again (with since). */
  _failPending(error, keepSubscribes) {
    for (const [id, pending] of this._pending) {
      this._pending.delete(id);
      const entry = keepSubscribes && pending.subscribing ? this._topics.get(pending.subscribing) : null;
      if (entry) {
        entry.waiters.push(pending);
      } else {
        pending.reject(error);
      }
    }
    if (!keepSubscribes) {
      for (const entry of this._topics.values()) {
        entry.waiters.splice(0).forEach((w) => w.reject(error));
      }
    }
  }

  _scheduleReconnect(detail) {
    this._notify('onStatus', 'closed', detail);
    if (this._closed) {
      return;
    }
    const o = this.options;
    const ceiling = Math.min(o.reconnectMaxDelay, o.reconnectBaseDelay * 2 ** this._attempt++);
    const delay = ceiling / 2 + Math.random() * ceiling / 2; // jitter: a fleet of clients does not come back at once
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), delay);
  }

  _notify(name, ...args) {
    notify(this.options, name, args);
  }
}

/**
 * Topics followed over Server-Sent Events (GET /sse) with the browser's EventSource. Pushed messages are the stream's
 * default events (EventSource.onmessage); `subscribed` and `bye` are named events. After a drop the EventSource
 * reconnects by itself and sends the last event id, whose positions make the gateway replay what was missed, once and
 * in order; a topic history cannot fill is reported to onRecoveryFailed (its `subscribed` event says recovered:false).
 */
export class PushEventStream {
  /**
   * @param {string[]} topics
   * @param {(m: {topic: string, epoch: string, seq: number, data: any, binary?: boolean}) => void} handler
   * @param {object} [options]
   * @param {string} [options.url] stream URL; default: /sse on this page's host.
   * @param {string} [options.user] development identity (?user=), for gateways running open.
   * @param {string} [options.accessToken] sent as access_token (EventSource cannot send an Authorization header).
   * @param {(state: 'connecting'|'open'|'closed', detail?: any) => void} [options.onStatus]
   * @param {(s: {topic: string, epoch: string, seq: number, recovered?: boolean}) => void} [options.onSubscribed]
   * @param {(gap: {topic: string, now: {epoch: string, seq: number}}) => void} [options.onRecoveryFailed]
   */
  constructor(topics, handler, options = {}) {
    this.options = options;
    const url = new URL(options.url || '/sse', location.href);
    topics.forEach((t) => url.searchParams.append('topic', t));
    if (options.user) {
      url.searchParams.set('user', options.user);
    }
    if (options.accessToken) {
      url.searchParams.set('access_token', options.accessToken);
    }
    this._source = new EventSource(url.toString());
    this._source.onopen = () => this._notify('onStatus', 'open');
    this._source.onerror = () =>
      this._notify('onStatus', this._source.readyState === EventSource.CLOSED ? 'closed' : 'connecting');
    this._source.onmessage = (event) => {
      notify({ handler }, 'handler', [messageOf(JSON.parse(event.data))]);
    };
    this._source.addEventListener('subscribed', (event) => {
      const s = JSON.parse(event.data);
      this._notify('onSubscribed', s);
      if (s.recovered === false) {
        this._notify('onRecoveryFailed', { topic: s.topic, now: { epoch: s.epoch, seq: s.seq } });
      }
    });
    // The gateway ends the stream (draining, or this reader fell behind); the EventSource comes back and resumes.
    this._source.addEventListener('bye', (event) => this._notify('onStatus', 'closed', JSON.parse(event.data)));
  }

  close() {
    this._source.close();
  }

  _notify(name, ...args) {
    notify(this.options, name, args);
  }
}
