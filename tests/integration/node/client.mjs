// Node `ws` client for the Conduit integration suite.
//
//   node client.mjs '<json spec>'
//
// Prints exactly one JSON object on stdout: {"ok": bool, ...details}.
// Every mode is bounded by spec.timeout_ms (default 60 s): past it the
// process prints {"ok": false, "error": "timeout"} and exits 1.
//
// Modes:
//   echo      {url, sizes:[n...], binary, deflate}    one message per size, echo checked
//   fragment  {url, fragments:[n...], binary, deflate, utf8}  one message sent
//             with ws's {fin:false} option, echo checked
//   close     {url, code, reason}                      close handshake; reports the
//             code/reason the server answered with
//   ping      {url, payloads:[hex...]}                 pong payloads
//   many      {url, clients, messages, deflate}        concurrent echo clients

import WebSocket from 'ws';

const spec = JSON.parse(process.argv[2] || '{}');
const timeoutMs = spec.timeout_ms || 60000;

function finish(obj, code) {
  process.stdout.write(JSON.stringify(obj) + '\n', () => process.exit(code ?? (obj.ok ? 0 : 1)));
}

const timer = setTimeout(() => finish({ ok: false, error: 'timeout', mode: spec.mode }, 1), timeoutMs);
timer.unref();

// Deterministic payloads: `n` bytes, ASCII when text.
function payload(n, binary, seed = 1) {
  const buf = Buffer.alloc(n);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    buf[i] = binary ? (x & 0xff) : 32 + ((x & 0xffff) % 95);
  }
  return buf;
}

function open(url, deflate, extra = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      perMessageDeflate: deflate ? { threshold: 0 } : false,
      maxPayload: 0,
      handshakeTimeout: 10000,
      ...extra,
    });
    ws.binaryType = 'nodebuffer';
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
}

function nextMessage(ws) {
  return new Promise((resolve, reject) => {
    const onMsg = (data, isBinary) => { cleanup(); resolve({ data, isBinary }); };
    const onClose = (code, reason) => { cleanup(); reject(new Error(`closed ${code} ${reason}`)); };
    const onErr = (e) => { cleanup(); reject(e); };
    function cleanup() {
      ws.off('message', onMsg); ws.off('close', onClose); ws.off('error', onErr);
    }
    ws.on('message', onMsg); ws.on('close', onClose); ws.on('error', onErr);
  });
}

function send(ws, data, opts) {
  return new Promise((resolve, reject) => ws.send(data, opts, (e) => (e ? reject(e) : resolve())));
}

function closeAndWait(ws, code, reason) {
  return new Promise((resolve) => {
    ws.once('close', (c, r) => resolve({ code: c, reason: r.toString('utf8') }));
    if (code === undefined) ws.close(); else ws.close(code, reason);
  });
}

async function modeEcho() {
  const ws = await open(spec.url, spec.deflate);
  const results = [];
  for (const n of spec.sizes) {
    const msg = payload(n, spec.binary, n + 7);
    const t0 = Date.now();
    const p = nextMessage(ws);
    await send(ws, spec.binary ? msg : msg.toString('latin1'), { binary: !!spec.binary });
    const { data, isBinary } = await p;
    results.push({
      size: n,
      ok: Buffer.compare(data, msg) === 0 && isBinary === !!spec.binary,
      got_size: data.length,
      got_binary: isBinary,
      ms: Date.now() - t0,
    });
  }
  const extensions = ws.extensions;
  const close = await closeAndWait(ws, 1000);
  return { ok: results.every((r) => r.ok), results, extensions, close };
}

async function modeFragment() {
  const ws = await open(spec.url, spec.deflate);
  let parts;
  if (spec.utf8) {
    // multi-byte text cut at byte offsets that split code points
    const text = 'Hello-µ@ßöäüàá-UTF-8!! κόσμε 𝄞 '.repeat(spec.repeat || 50);
    const bytes = Buffer.from(text, 'utf8');
    parts = [];
    let i = 0, k = 0;
    const cuts = spec.fragments;
    while (i < bytes.length) {
      const n = cuts[k++ % cuts.length];
      parts.push(bytes.subarray(i, i + n));
      i += n;
    }
  } else {
    parts = spec.fragments.map((n, i) => payload(n, spec.binary, i + 3));
  }
  const whole = Buffer.concat(parts);
  const p = nextMessage(ws);
  for (let i = 0; i < parts.length; i++) {
    await send(ws, parts[i], { binary: !!spec.binary, fin: i === parts.length - 1 });
  }
  const { data, isBinary } = await p;
  const ok = Buffer.compare(data, whole) === 0 && isBinary === !!spec.binary;
  const close = await closeAndWait(ws, 1000);
  return { ok, frames: parts.length, size: whole.length, got_size: data.length, got_binary: isBinary, extensions: ws.extensions, close };
}

async function modeClose() {
  const ws = await open(spec.url, false);
  const p = nextMessage(ws);
  await send(ws, 'before close', { binary: false });
  await p;
  const close = await closeAndWait(ws, spec.code, spec.reason);
  return { ok: true, close };
}

async function modePing() {
  const ws = await open(spec.url, false);
  const pongs = [];
  const want = spec.payloads.length;
  const done = new Promise((resolve) => {
    ws.on('pong', (data) => { pongs.push(data.toString('hex')); if (pongs.length === want) resolve(); });
  });
  for (const hex of spec.payloads) ws.ping(Buffer.from(hex, 'hex'));
  await done;
  const close = await closeAndWait(ws, 1000);
  return { ok: JSON.stringify(pongs) === JSON.stringify(spec.payloads), pongs, close };
}

async function modeMany() {
  const one = async (i) => {
    const ws = await open(spec.url, spec.deflate && i % 2 === 0);
    for (let j = 0; j < spec.messages; j++) {
      const bin = (i + j) % 2 === 0;
      const msg = payload(((i * 131 + j * 17) % 5000) + 1, bin, i * 1000 + j);
      const p = nextMessage(ws);
      await send(ws, bin ? msg : msg.toString('latin1'), { binary: bin });
      const { data, isBinary } = await p;
      if (Buffer.compare(data, msg) !== 0 || isBinary !== bin) throw new Error(`client ${i} msg ${j} mismatch`);
    }
    await closeAndWait(ws, 1000);
    return i;
  };
  const ids = await Promise.all(Array.from({ length: spec.clients }, (_, i) => one(i)));
  return { ok: ids.length === spec.clients, clients: ids.length };
}

const modes = { echo: modeEcho, fragment: modeFragment, close: modeClose, ping: modePing, many: modeMany };

try {
  const fn = modes[spec.mode];
  if (!fn) throw new Error(`unknown mode ${spec.mode}`);
  const out = await fn();
  finish({ mode: spec.mode, ...out });
} catch (e) {
  finish({ ok: false, mode: spec.mode, error: String(e && e.stack || e) }, 1);
}
