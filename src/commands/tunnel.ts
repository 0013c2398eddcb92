import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Command, InvalidArgumentError } from 'commander';
import { UnsupportedError } from '../errors.js';
import { validateSessionId } from '../session/model.js';
import { type Ctx, locate, out } from './context.js';
import { json } from './format.js';

function port(min: number) {
  return (v: string) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > 65535) throw new InvalidArgumentError(`a port from ${min} to 65535`);
    return n;
  };
}

/**
 * `onmemos tunnel`: a TCP port inside a session reached from this machine, as `gcloud workstations
 * start-tcp-tunnel` does: on stdin/stdout (--stdio, an ssh ProxyCommand), or on a local port that takes any number
 * of connections, each its own tunnel, until Ctrl-C.
 */
export function tunnelCommand(ctx: () => Ctx, setExit: (code: number) => void): Command {
  return new Command('tunnel')
    .description('reach a TCP port inside a session from this machine')
    .argument('<id>', 'session id')
    .option('--port <port>', 'the port inside the session', port(1), 22)
    .option(
      '--local-port <port>',
      'listen on this port of 127.0.0.1 (0: any free one), one tunnel per connection',
      port(0),
    )
    .option('--stdio', 'one connection on stdin and stdout (for ssh -o ProxyCommand)')
    .option('--json', 'print where it listens as JSON ({"host","port"})')
    .addHelpText(
      'after',
      `
Examples:
  onmemos tunnel "$id" --local-port 2222 &   ssh -p 2222 user@localhost
  ssh -o ProxyCommand="onmemos tunnel --stdio $id" user@workstation
  onmemos tunnel "$id" --port 8080 --local-port 0 --json   # {"host":"127.0.0.1","port":41234}

It runs until Ctrl-C (--stdio: until the far end closes; the end of stdin does not close a tunnel). Exit status:
0; 1 with one line when the tunnel cannot be opened (a session that is not running, nothing listening on the
port); 2 when the session's provider has no tunnel.`,
    )
    .action(async (id: string, o: { port: number; localPort?: number; stdio?: boolean; json?: boolean }) => {
      const c = ctx();
      if (o.stdio && o.localPort !== undefined)
        throw new InvalidArgumentError('give --stdio or --local-port, not both');
      const { provider } = await locate(c, validateSessionId(id));
      const open = provider.tunnel?.bind(provider);
      if (!open) {
        throw new UnsupportedError(`provider ${provider.kind} has no tunnel into its sessions`, {
          hint: 'use onmemos exec or shell',
        });
      }
      if (o.stdio) {
        setExit(await pipeStdio(c, await open(id, o.port)));
        return;
      }
      await listen(c, o.localPort ?? 0, o.json ?? false, () => open(id, o.port));
    });
}

/**
 * stdin → the tunnel → stdout, until the far side closes; 0 when it ended cleanly. A WebSocket has no half-close:
 * the end of stdin does not close the tunnel (as `nc -N` would not drop what is still coming back), the far end
 * does.
 */
function pipeStdio(c: Ctx, t: Duplex): Promise<number> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (code: number) => {
      if (done) return;
      done = true;
      c.stdin.unpipe(t);
      resolve(code);
    };
    c.stdin.pipe(t, { end: false });
    t.pipe(c.stdout, { end: false });
    t.on('end', () => finish(0));
    t.on('close', () => finish(0));
    t.on('error', (e) => {
      c.stderr.write(`onmemos: tunnel: ${e.message}\n`);
      finish(1);
    });
    for (const sig of ['SIGINT', 'SIGTERM'] as const)
      c.signals.once(sig, () => {
        t.destroy();
        finish(130);
      });
  });
}

/** A local listener: each connection gets its own tunnel; runs until SIGINT/SIGTERM. */
async function listen(c: Ctx, localPort: number, asJson: boolean, open: () => Promise<Duplex>): Promise<void> {
  const sockets = new Set<Socket>();
  // Half-open: a client that ends its side still gets what comes back, until the far end closes (no half-close
  // in a WebSocket).
  const { createServer } = await import('node:net'); // not at the top: every command's start-up would pay
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.pause();
    open().then(
      (t) => {
        socket.pipe(t, { end: false });
        t.pipe(socket);
        t.on('error', () => socket.destroy());
        t.on('close', () => socket.end());
        socket.on('close', () => t.destroy());
        socket.resume();
      },
      (e: Error) => {
        c.stderr.write(`onmemos: tunnel: ${e.message}\n`);
        socket.destroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(localPort, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : localPort;
  out(c, asJson ? json({ host: '127.0.0.1', port: bound }) : `listening on 127.0.0.1:${bound} (Ctrl-C ends it)`);
  await new Promise<void>((resolve) => {
    const stop = () => {
      for (const sig of ['SIGINT', 'SIGTERM'] as const) c.signals.off(sig, stop);
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    };
    for (const sig of ['SIGINT', 'SIGTERM'] as const) c.signals.on(sig, stop);
  });
}
