// Fan-out load test for tests/integration/test_hub_load.py.
//
//   node fanout_10k.mjs '<json spec>'
//
// spec: {base: "ws://127.0.0.1:PORT", room, clients (10000), concurrency
//        (connections opening at once), timeout_ms, grace_ms}
//
// Opens `clients` WebSocket connections to {base}/ws/{room} (each joins the
// room on open), then one more connection to {base}/ws that publishes one
// message to the room, and counts, per receiver, the copies of that message
// that arrive.  After the last receiver has it (or the deadline), it waits
// grace_ms more for duplicates, then prints exactly one JSON object:
//
//   {ok, clients, connected, connect_ms, connect_errors, closed_early,
//    subscribers (from the publish reply), offset, received (receivers that
//    got it), missing, duplicates, other (other messages), publish_to_reply_ms,
//    publish_to_first_ms, publish_to_last_ms, p50_ms, p99_ms, deliveries_per_s,
//    error?}
//
// Everything is bounded by timeout_ms; the process always exits.

import WebSocket from 'ws';

const spec = JSON.parse(process.argv[2] || '{}');
const N = spec.clients ?? 10000;
const room = spec.room ?? 'fanout:room';
const base = spec.base;
const concurrency = spec.concurrency ?? 500;
const timeoutMs = spec.timeout_ms ?? 100000;
const graceMs = spec.grace_ms ?? 500;
const started = performance.now();

const result = {
  ok: false, clients: N, connected: 0, connect_ms: null, connect_errors: 0,
  closed_early: 0, subscribers: null, offset: null, received: 0, missing: N,
  duplicates: 0, other: 0, publish_to_reply_ms: null, publish_to_first_ms: null,
  publish_to_last_ms: null, p50_ms: null, p99_ms: null, deliveries_per_s: null,
};
const errors = [];
const sockets = new Array(N);
const counts = new Uint32Array(N);
const arrival = new Float64Array(N);
let publishing = false;
let token = null;
let t0 = 0;
let firstAt = null;
let lastAt = null;
let allReceived = null; // resolve()

function note(err) {
  if (errors.length < 10)
    errors.push(String(err && err.message ? err.message : err));
}

function finish(code) {
  result.elapsed_ms = Math.round(performance.now() - started);
  if (errors.length)
    result.error = errors.join('; ');
  for (const ws of sockets) {
    if (ws) {
      try { ws.terminate(); } catch { /* already gone */ }
    }
  }
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(code));
}

const deadline = setTimeout(() => {
  note('timeout');
  summarize();
  finish(1);
}, timeoutMs);
deadline.unref();

function onMessage(i, raw) {
  let m;
  try {
    m = JSON.parse(raw.toString());
  } catch (e) {
    note(`client ${i}: not JSON`);
    result.other++;
    return;
  }
  if (m.type === 'message' && m.channel === room && m.data && m.data.fanout === token && token) {
    const now = performance.now();
    if (counts[i]++ === 0) {
      arrival[i] = now - t0;
      result.received++;
      if (firstAt === null)
        firstAt = now;
      lastAt = now;
      if (result.received === N && allReceived)
        allReceived();
    } else {
      result.duplicates++;
    }
    return;
  }
  result.other++;
  if (result.other <= 3)
    note(`client ${i}: unexpected ${raw.toString().slice(0, 200)}`);
}

function open(i) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${base}/ws/${encodeURIComponent(room)}`,
                             { perMessageDeflate: false, handshakeTimeout: 30000 });
    sockets[i] = ws;
    let opened = false;
    ws.on('open', () => {
      opened = true;
      result.connected++;
      resolve(true);
    });
    ws.on('message', (data) => onMessage(i, data));
    ws.on('error', (err) => {
      if (!opened) {
        result.connect_errors++;
        note(`client ${i}: ${err.message}`);
        resolve(false);
      }
    });
    ws.on('close', () => {
      if (!opened)
        resolve(false);
      else if (!publishing || counts[i] === 0)
        result.closed_early++;
    });
  });
}

async function openAll() {
  let next = 0;
  async function lane() {
    while (next < N) {
      const i = next++;
      await open(i);
    }
  }
  const lanes = [];
  for (let k = 0; k < Math.min(concurrency, N); k++)
    lanes.push(lane());
  await Promise.all(lanes);
}

function summarize() {
  result.missing = N - result.received;
  if (firstAt !== null)
    result.publish_to_first_ms = +(firstAt - t0).toFixed(2);
  if (lastAt !== null) {
    result.publish_to_last_ms = +(lastAt - t0).toFixed(2);
    result.deliveries_per_s = Math.round(result.received / Math.max(lastAt - t0, 0.001) * 1000);
  }
  const got = [];
  for (let i = 0; i < N; i++)
    if (counts[i] > 0)
      got.push(arrival[i]);
  got.sort((a, b) => a - b);
  if (got.length) {
    result.p50_ms = +got[Math.floor(got.length * 0.5)].toFixed(2);
    result.p99_ms = +got[Math.min(got.length - 1, Math.floor(got.length * 0.99))].toFixed(2);
  }
}

async function main() {
  const c0 = performance.now();
  await openAll();
  result.connect_ms = Math.round(performance.now() - c0);
  if (result.connected !== N) {
    note(`only ${result.connected} of ${N} connections opened`);
    summarize();
    finish(1);
    return;
  }

  const pub = new WebSocket(`${base}/ws`, { perMessageDeflate: false });
  await new Promise((resolve, reject) => {
    pub.on('open', resolve);
    pub.on('error', reject);
  });
  const done = new Promise((resolve) => { allReceived = resolve; });
  const replied = new Promise((resolve) => {
    pub.on('message', (raw) => {
      const m = JSON.parse(raw.toString());
      if (m.id === 'fanout-1') {
        result.publish_to_reply_ms = +(performance.now() - t0).toFixed(2);
        if (m.type === 'publish_response') {
          result.subscribers = m.channels?.[room]?.subscribers ?? null;
          result.offset = m.offset ?? null;
        } else {
          note(`publish failed: ${raw.toString().slice(0, 200)}`);
        }
        resolve();
      }
    });
  });
  token = `t${process.pid}-${Date.now()}`;
  publishing = true;
  t0 = performance.now();
  pub.send(JSON.stringify({ type: 'publish', id: 'fanout-1', channel: room,
                            data: { fanout: token } }));
  await Promise.all([done, replied]);
  // duplicates would arrive now, if any
  await new Promise((r) => setTimeout(r, graceMs));
  summarize();
  result.ok = result.received === N && result.duplicates === 0 && result.other === 0 &&
              result.subscribers === N && errors.length === 0;
  pub.terminate();
  finish(result.ok ? 0 : 1);
}

main().catch((e) => {
  note(e);
  summarize();
  finish(1);
});
