#!/usr/bin/env node
// A test-only Cloud Workstations TCP tunnel client for ssh's ProxyCommand (until `onmemos tunnel --stdio` replaces
// it): stdin/stdout ↔ wss://{host}/_workstation/tcp/{port} with `Authorization: Bearer {access token}`.
//
//   node ws-tunnel.mjs HOST PORT TOKEN_FILE [CA_FILE]
//
// The token is read from TOKEN_FILE at each start (a test refreshes the file); the CA from CA_FILE, else from
// NODE_EXTRA_CA_CERTS. A refused upgrade prints `ws-tunnel: HTTP {status}: {body}` on stderr and exits 1.
import { readFileSync } from 'node:fs';
import { createWebSocketStream, WebSocket } from 'ws';

const [host, port, tokenFile, caFile] = process.argv.slice(2);
if (!host || !port || !tokenFile) {
  process.stderr.write('usage: ws-tunnel.mjs HOST PORT TOKEN_FILE [CA_FILE]\n');
  process.exit(2);
}
const token = readFileSync(tokenFile, 'utf8').trim();
const ws = new WebSocket(`wss://${host}/_workstation/tcp/${port}`, {
  headers: { authorization: `Bearer ${token}` },
  perMessageDeflate: false,
  ...(caFile ? { ca: readFileSync(caFile) } : {}),
});
const fail = (message) => {
  process.stderr.write(`ws-tunnel: ${message}\n`);
  process.exit(1);
};
ws.on('unexpected-response', (_req, res) => {
  let body = '';
  res.setEncoding('utf8');
  res.on('data', (d) => (body += d));
  res.on('end', () => fail(`HTTP ${res.statusCode}: ${body.trim()}`));
});
ws.on('error', (e) => fail(e.message));
ws.on('open', () => {
  const stream = createWebSocketStream(ws);
  stream.on('error', () => process.exit(0));
  process.stdin.pipe(stream);
  stream.pipe(process.stdout);
  stream.on('end', () => process.stdout.end(() => process.exit(0)));
});
