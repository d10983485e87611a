// A peer for `make bench`: npm `ws` (with `bufferutil`), written the way ws
// users write servers, configured for speed (no permessage-deflate, no client
// tracking).
//
//   node ws_server.mjs PORT
//
//   /echo       every message sent back as it came (text stays text)
//   /ws/ROOM    a subscriber of ROOM
//   /ws         a publisher: {"type":"publish","channel":"ROOM","data":...}
//               is parsed, and the message as received is broadcast to the
//               room's sockets.  The frame is built once (Sender.frame) and
//               the same bytes are written to every socket, as ws's own
//               broadcast recipes do.  Any connection may publish.

import { WebSocketServer, WebSocket, Sender } from 'ws';

const port = Number(process.argv[2] || 8080);

// Fail loudly if bufferutil is missing: the comparison is with it.
import('bufferutil').catch(() => {
  console.error('ws_server: bufferutil not installed');
  process.exit(2);
});

const rooms = new Map(); // room name -> Set of sockets

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  backlog: 4096,
  perMessageDeflate: false,
  clientTracking: false,
  maxPayload: 64 * 1024 * 1024,
});

function broadcast(room, data) {
  const members = rooms.get(room);
  if (!members || members.size === 0) return;
  // One frame for everyone: header and payload in one buffer.
  const list = Sender.frame(data, {
    fin: true, rsv1: false, opcode: 1, mask: false, readOnly: false,
  });
  const frame = list.length === 2 ? Buffer.concat(list) : list[0];
  for (const ws of members) {
    if (ws.readyState === WebSocket.OPEN) ws._sender.sendFrame([frame]);
  }
}

function onPublish(data, isBinary) {
  if (isBinary) return;
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    return;
  }
  if (msg && msg.type === 'publish' && typeof msg.channel === 'string') {
    broadcast(msg.channel, data);
  }
}

wss.on('connection', (ws, req) => {
  const url = req.url || '/';
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  ws.on('error', () => {}); // a reset peer must not take the server down

  if (path === '/echo') {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    return;
  }
  if (path.startsWith('/ws/') && path.length > 4) {
    const room = decodeURIComponent(path.slice(4));
    let members = rooms.get(room);
    if (!members) rooms.set(room, (members = new Set()));
    members.add(ws);
    ws.on('close', () => {
      members.delete(ws);
      if (members.size === 0 && rooms.get(room) === members) rooms.delete(room);
    });
  }
  if (path === '/ws' || path.startsWith('/ws/')) {
    ws.on('message', onPublish);
    return;
  }
  ws.close(1008, 'unknown path');
});

wss.on('listening', () => console.error(`ws_server: listening on 127.0.0.1:${port}`));
wss.on('error', (err) => {
  console.error(`ws_server: ${err.message}`);
  process.exit(1);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
