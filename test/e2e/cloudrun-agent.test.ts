/**
 * A Cloud Run service on the fake whose container runs the real `onmemos agent` (the workspace images' CMD), staged
 * into its sandbox from dist/cloud-agent.cjs: the uri answers /health, and exec (v5 WebSocket, piped and tty), the
 * JSON shell and execute really go through the front end (ID token) to the agent (session secret). An agent
 * without a secret exits, and the revision fails with Cloud Run's message and the agent's line in its log.
 *
 * Needs the agent bundle: `npm run build` on a tree with src/agent/cloud-main.ts (merged from h-agent), or
 * ONMEMOS_FAKE_AGENT_ROOT naming a package root that has dist/cloud-agent.cjs.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { errorFromResponse } from '../../src/errors.js';
import { openExec } from '../../src/exec/client.js';
import type { ExecSpec } from '../../src/exec/process.js';
import { openTunnelSocket } from '../../src/exec/tunnel.js';
import { agentRoot, OnmemosImage } from '../fakes/cloudrun/image.js';
import { type CloudRunFake, startCloudRunFake } from '../fakes/cloudrun/server.js';
import { clients, parentOf, sandboxes } from '../helpers/cloudrun.js';

const MISSING = new OnmemosImage(agentRoot(), '/nonexistent').missing();
/** A server on 127.0.0.1:PORT that answers `echo:` and what it read, then closes the connection. */
const ECHO_PY = `import socket
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', PORT)); s.listen()
while True:
  c,_=s.accept(); c.sendall(b'echo:' + c.recv(100)); c.close()`;
const SECRET = 'cloudrun-fake-secret-0123456789';
const SHA = createHash('sha256').update(SECRET).digest('hex');
let fake: CloudRunFake;
let c: ReturnType<typeof clients>;
let uri: string;
const lines: string[] = [];

describe.skipIf(MISSING !== undefined)(`onmemos agent as a revision${MISSING ? ` (skipped: ${MISSING})` : ''}`, () => {
  beforeAll(async () => {
    fake = await startCloudRunFake({ network: 'isolated', startupTimeoutMs: 15_000, log: (l) => lines.push(l) });
    c = clients(fake);
    const [op] = await c.services.createService({
      parent: parentOf(fake),
      serviceId: 'ws-team-alice',
      service: {
        template: {
          containers: [
            {
              image: 'us-central1-docker.pkg.dev/onmemos-fake/onmemos/python:latest',
              env: [
                { name: 'ONMEMOS_AGENT_SECRET_SHA256', value: SHA },
                { name: 'WORKSPACE_ID', value: 'ws-team-alice-1' },
                { name: 'NAMESPACE', value: 'team' },
              ],
              startupProbe: { httpGet: { path: '/health' } },
            },
          ],
        },
      },
    });
    uri = (await op.promise())[0].uri!;
  });
  afterAll(async () => {
    await c?.services.close();
    await Promise.all([c?.jobs.close(), c?.executions.close()]);
    await fake?.close();
  });

  const headers = () => ({ authorization: `Bearer ${fake.idToken(uri)}`, 'X-OnMemOS-Secret': SECRET });
  const exec = async (spec: ExecSpec, input?: string) => {
    const p = await openExec(spec, {
      url: `${uri.replace(/^http/, 'ws')}/v1/exec`,
      headers: headers(),
      peer: 'the agent',
      refused: errorFromResponse,
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    if (spec.stdin) p.stdin.end(input);
    return { status: await p.exit, out, err };
  };

  it('the uri answers /health (ID token at the front end; no secret needed by the agent)', async () => {
    const r = await fetch(`${uri}/health`, { headers: { authorization: `Bearer ${fake.idToken(uri)}` } });
    expect([r.status, await r.json()]).toEqual([200, { status: 'ok' }]);
    expect(
      lines.some((l) =>
        /^ws-team-alice-00001-[a-z0-9]{3}: onmemos agent: listening on http:\/\/0\.0\.0\.0:\d+$/.test(l),
      ),
    ).toBe(true);
  });

  it('exec goes through the front end to the agent: stdin to EOF, stderr apart, the exit code, the env', async () => {
    const before = fake.serviceRequests.length;
    const r = await exec(
      { argv: ['sh', '-c', 'cat; echo "$WORKSPACE_ID $NAMESPACE $(pwd)" >&2; exit 4'], stdin: true },
      'piped\n',
    );
    expect(r).toEqual({ status: { code: 4 }, out: 'piped\n', err: 'ws-team-alice-1 team /workspace\n' });
    const tty = await exec({ argv: ['sh', '-c', 'tty; stty size'], tty: true, cols: 91, rows: 27 });
    expect(tty.status).toEqual({ code: 0 });
    expect(tty.out).toMatch(/^\/dev\/pts\/\d+\r\n27 91\r\n$/);
    expect(
      fake.serviceRequests
        .slice(before)
        .filter((q) => q.upgrade)
        .map((q) => [q.auth, q.status]),
    ).toEqual([
      ['id-token', 101],
      ['id-token', 101],
    ]);
  });

  it('the JSON shell and execute, as the document describes them', async () => {
    const ws = new WebSocket(`${uri.replace(/^http/, 'ws')}/v1/shell`, { headers: headers() });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    ws.send(JSON.stringify({ type: 'command', command: 'echo from the json shell' }));
    const answer = JSON.parse(String(await new Promise((r) => ws.once('message', r))));
    ws.close();
    expect(answer).toEqual({
      type: 'command_result',
      stdout: 'from the json shell\n',
      stderr: '',
      returncode: 0,
      success: true,
    });
    const r = await fetch(`${uri}/v1/execute`, {
      method: 'POST',
      headers: { ...headers(), 'content-type': 'application/json' },
      body: JSON.stringify({ command: 'echo $HOME; exit 2' }),
    });
    expect(await r.json()).toEqual({ stdout: '/workspace\n', stderr: '', returncode: 2, success: false });
  });

  it("without the session's secret the agent refuses (401), with it the front end's token is still needed (403)", async () => {
    const r = await fetch(`${uri}/v1/execute`, {
      method: 'POST',
      headers: { authorization: `Bearer ${fake.idToken(uri)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: 'true' }),
    });
    expect(r.status).toBe(401);
    const front = await fetch(`${uri}/v1/execute`, { method: 'POST', headers: { 'X-OnMemOS-Secret': SECRET } });
    expect(front.status).toBe(403);
  });

  it('/v1/tunnel: bytes to a port in the container; the secret, a port, a listener and the upgrade are required', async () => {
    const base = `${uri.replace(/^http/, 'ws')}/v1/tunnel`;
    const refused = (status: number, body: string) => Object.assign(new Error(body), { status });
    const open = (q: string, h: Record<string, string>) =>
      openTunnelSocket(`${base}${q}`, { headers: h, refused, unreachable: (e) => e });
    const started = await exec({
      argv: ['sh', '-c', 'setsid -f python3 -c "$1" >/dev/null 2>&1', 'sh', ECHO_PY.replace('PORT', '9191')],
    });
    expect(started.status).toEqual({ code: 0 });
    let got = '';
    for (let i = 0; i < 50 && got !== 'echo:over the tunnel'; i++) {
      const t = await open('?port=9191', headers()).catch(() => undefined);
      if (t) {
        t.write('over the tunnel'); // not end(): a WebSocket has no half-close, the server ends the tunnel
        got = await new Promise<string>((resolve) => {
          let text = '';
          t.on('data', (d) => (text += d));
          // The server closing its side ends the stream (our side stays writable: no 'close' until destroyed).
          t.on('end', () => resolve(text));
          t.on('close', () => resolve(text));
        });
        t.destroy();
      }
      if (got !== 'echo:over the tunnel') await new Promise((r) => setTimeout(r, 100));
    }
    expect(got).toBe('echo:over the tunnel');
    const status = (p: Promise<unknown>) =>
      p.then(
        () => 0,
        (e: { status?: number }) => e.status,
      );
    const token = { authorization: `Bearer ${fake.idToken(uri)}` };
    expect(await status(open('?port=9191', token))).toBe(401); // no secret
    expect(await status(open('?port=0', headers()))).toBe(400);
    expect(await status(open('?port=9192', headers()))).toBe(503); // nothing listens there
    const plain = await fetch(`${uri}/v1/tunnel?port=9191`, { headers: headers() });
    expect(plain.status).toBe(400);
  });

  it('an agent without a secret exits: the revision fails with Cloud Run message, the agent line in its log', async () => {
    const [op] = await c.services.createService({
      parent: parentOf(fake),
      serviceId: 'no-secret',
      service: { template: { containers: [{ image: 'onmemos/python' }] } },
    });
    const e = await op.promise().then(
      () => undefined,
      (x: Error & { code: number }) => x,
    );
    expect(e?.code).toBe(9);
    expect(e?.message).toMatch(
      /^Revision 'no-secret-00001-[a-z0-9]{3}' is not ready and cannot serve traffic\. The user-provided container failed to start and listen on the port/,
    );
    expect(lines.some((l) => /^no-secret-00001-[a-z0-9]{3}: onmemos agent: no session secret: /.test(l))).toBe(true);
    const [del] = await c.services.deleteService({ name: `${parentOf(fake)}/services/no-secret` });
    await del.promise();
    expect(await sandboxes(fake)).toHaveLength(1);
  });
});
