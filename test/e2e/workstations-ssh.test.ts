/**
 * Real /usr/bin/ssh to the Cloud Workstations fake through its TCP tunnel (ProxyCommand: the test-only
 * ws-tunnel.mjs, wss with the access token) to the real Debian sshd running as `user` in the workstation's local
 * sandbox: exec and exit codes, a tty shell, a file that outlives its connection and a stop/start, the tunnel
 * refused for a stopped workstation and for an expired token, 503 for a port nothing listens on.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWorkstationsFake, type WorkstationsFake } from '../fakes/workstations/server.js';
import {
  accessToken,
  createWorkstation,
  deleteWorkstation,
  runProcess,
  SSH,
  sandboxes,
  sshArgs,
  sshKey,
  startWorkstation,
  stopWorkstation,
  writeToken,
} from '../helpers/workstations.js';

const SSHD = '/usr/sbin/sshd';
let fake: WorkstationsFake;
let work: string;
let key: { key: string; pub: string };
let tokenFile: string;

beforeAll(async () => {
  work = mkdtempSync(join(process.env.ONMEMOS_TEST_TMP ?? tmpdir(), 'wsf-ssh-'));
  key = sshKey(work);
  tokenFile = join(work, 'token');
  fake = await startWorkstationsFake({ authorizedKeys: [key.pub], startTimeMs: 100, accessTokenTtlCapSeconds: 2 });
});
afterAll(async () => {
  await fake?.close();
  rmSync(work, { recursive: true, force: true });
});

/** ssh through the tunnel of workstation `id` (a fresh token first), running `command`. */
async function ssh(id: string, command: string[], o: { input?: string | Buffer; tty?: boolean; port?: number } = {}) {
  writeToken(tokenFile, (await accessToken(fake, id)).accessToken);
  const host = fake.workstations.get(id)!.host;
  const args = sshArgs({ host, key: key.key, tokenFile, caFile: fake.caFile, port: o.port });
  return runProcess([SSH, ...(o.tty ? ['-tt'] : ['-T']), ...args, ...command], { input: o.input });
}

describe.skipIf(!existsSync(SSHD))('ssh through the workstation tunnel', () => {
  // One workstation goes through these steps in order (stop/start, a key added, delete): the run never shuffles them.
  describe('one workstation, step by step', { shuffle: false }, () => {
    it('runs commands as user in /home/user, with their exit codes, stdin and binary output', async () => {
      await createWorkstation(fake, 'w1');
      const op = await startWorkstation(fake, 'w1');
      expect(op.error).toBeUndefined();
      expect(op.response?.state).toBe('STATE_RUNNING');
      const who = await ssh('w1', ['id -un; id -u; pwd; echo "$HOME"']);
      expect(who.err).toBe('');
      expect(who.out).toBe('user\n1000\n/home/user\n/home/user\n');
      expect(who.code).toBe(0);
      expect((await ssh('w1', ['exit 7'])).code).toBe(7);
      const cat = await ssh('w1', ['sha256sum'], { input: 'x'.repeat(300_000) });
      expect(cat.out).toMatch(/^[0-9a-f]{64} {2}-\n$/);
      const bin = await ssh('w1', ['head -c 200000 /dev/zero | tr "\\0" "\\377" | wc -c']);
      expect(bin.out.trim()).toBe('200000');
      const err = await ssh('w1', ['echo oops >&2; exit 3']);
      expect(err).toMatchObject({ code: 3, out: '', err: 'oops\n' });
    });

    it('gives a shell a tty', async () => {
      const sh = await ssh('w1', [], { tty: true, input: 'tty; echo "term=$TERM"; exit 5\n' });
      expect(sh.out).toMatch(/\/dev\/pts\/\d+/);
      expect(sh.out).toContain('term=');
      expect(sh.code).toBe(5);
    });

    it('keeps the home across connections and across stop and start', async () => {
      expect((await ssh('w1', ['echo kept > ~/note; mkdir -p ~/.config/x && echo deep > ~/.config/x/f'])).code).toBe(0);
      expect((await ssh('w1', ['cat ~/note'])).out).toBe('kept\n');
      const before = fake.workstations.get('w1')!.session;
      const stopped = await stopWorkstation(fake, 'w1');
      expect(stopped.response?.state).toBe('STATE_STOPPED');
      expect(await sandboxes(fake)).not.toContain(before);
      await startWorkstation(fake, 'w1');
      expect(fake.workstations.get('w1')!.session).not.toBe(before);
      const after = await ssh('w1', ['cat ~/note ~/.config/x/f; ls -ld ~ | cut -c1-10; ls /tmp | wc -l']);
      expect(after.out).toBe('kept\ndeep\ndrwx------\n0\n');
    });

    it('refuses the tunnel of a stopped workstation with a clear message', async () => {
      await createWorkstation(fake, 'w2');
      await startWorkstation(fake, 'w2');
      writeToken(tokenFile, (await accessToken(fake, 'w2')).accessToken);
      await fake.workstations.get('w2')!.stop();
      const host = fake.workstations.get('w2')!.host;
      const r = await runProcess([SSH, ...sshArgs({ host, key: key.key, tokenFile, caFile: fake.caFile }), 'true']);
      expect(r.code).toBe(255);
      expect(r.err).toContain(
        `ws-tunnel: HTTP 409: Workstation ${fake.configName}/workstations/w2 is not running (STATE_STOPPED): start it first`,
      );
      expect(fake.tunnelRequests.at(-1)).toMatchObject({ port: 22, upgrade: true, auth: 'ok', status: 409 });
    });

    it('refuses an expired token (401), and a fresh one works', async () => {
      const { accessToken: t, expireTime } = await accessToken(fake, 'w1'); // asked 1 h, capped at 2 s here
      expect(Date.parse(expireTime) - Date.now()).toBeLessThanOrEqual(2_000);
      writeToken(tokenFile, t);
      const host = fake.workstations.get('w1')!.host;
      const args = sshArgs({ host, key: key.key, tokenFile, caFile: fake.caFile });
      expect((await runProcess([SSH, ...args, 'echo early'])).out).toBe('early\n');
      await new Promise((r) => setTimeout(r, 2_100));
      const late = await runProcess([SSH, ...args, 'echo late']);
      expect(late.code).toBe(255);
      expect(late.err).toContain('ws-tunnel: HTTP 401: Unauthorized: the access token has expired');
      expect((await ssh('w1', ['echo fresh'])).out).toBe('fresh\n');
      // No token, a made-up one, another workstation's: 401 each.
      writeToken(tokenFile, 'wst.fake-made-up');
      expect((await runProcess([SSH, ...args, 'true'])).err).toContain(
        'HTTP 401: Unauthorized: the access token is not valid',
      );
      await startWorkstation(fake, 'w2');
      writeToken(tokenFile, (await accessToken(fake, 'w2')).accessToken);
      expect((await runProcess([SSH, ...args, 'true'])).err).toContain(
        'HTTP 401: Unauthorized: the access token was not issued for this workstation and port',
      );
    });

    it('takes a key authorized while the workstation runs, and refuses a key never authorized', async () => {
      const other = sshKey(work, 'other');
      writeToken(tokenFile, (await accessToken(fake, 'w1')).accessToken);
      const host = fake.workstations.get('w1')!.host;
      const args = sshArgs({ host, key: other.key, tokenFile, caFile: fake.caFile });
      const refused = await runProcess([SSH, ...args, 'true']);
      expect(refused.code).toBe(255);
      expect(refused.err).toContain('Permission denied (publickey)');
      fake.authorizeKey(other.pub);
      expect((await runProcess([SSH, ...args, 'echo second key'])).out).toBe('second key\n');
    });

    it('takes a newly authorized key on many connections at once (each brings the keys up to date)', async () => {
      const third = sshKey(work, 'third');
      writeToken(tokenFile, (await accessToken(fake, 'w1')).accessToken);
      const host = fake.workstations.get('w1')!.host;
      const args = sshArgs({ host, key: third.key, tokenFile, caFile: fake.caFile });
      fake.authorizeKey(third.pub);
      const ran = await Promise.all([1, 2, 3, 4, 5, 6].map((n) => runProcess([SSH, ...args, `echo ${n}`])));
      expect(ran.map((r) => [r.code, r.out, r.err])).toEqual([1, 2, 3, 4, 5, 6].map((n) => [0, `${n}\n`, '']));
    });

    it('answers 503 for a port nothing listens on in the workstation', async () => {
      const r = await ssh('w1', ['true'], { port: 1 });
      expect(r.code).toBe(255);
      expect(r.err).toContain('ws-tunnel: HTTP 503: The workstation does not have a server running on port 1');
    });

    it('removes the sandbox and the saved home on delete', async () => {
      for (const id of ['w1', 'w2']) expect((await deleteWorkstation(fake, id)).error).toBeUndefined();
      expect(fake.workstations.list()).toEqual([]);
      expect(await sandboxes(fake)).toEqual([]);
    });
  });
});
