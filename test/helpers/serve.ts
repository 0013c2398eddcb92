/**
 * A real `onmemos serve --port 0` (bin/onmemos.js) over its own state directory, and raw clients for it: HTTP with
 * any headers (Host included), a hand-made WebSocket upgrade over node:net, the server's resident memory. Every
 * server started here is stopped, and every socket closed, by the caller's `stop()`/`close()`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { BIN } from './cli.js';

export interface Served {
  url: string;
  port: number;
  child: ChildProcess;
  /** stderr so far (the server's own messages). */
  stderr: () => string;
  /** Whether the process is still running. */
  alive: () => boolean;
  /** SIGTERM, then SIGKILL after 5 s; resolves when it has exited. */
  stop: () => Promise<void>;
}

export function startServe(env: Record<string, string>, args: string[] = []): Promise<Served> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', ...args], {
      env: { ...process.env, ONMEMOS_SERVER: '', ONMEMOS_LOG: '', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    let exited = false;
    const exit = new Promise<void>((r) =>
      child.once('exit', () => {
        exited = true;
        r();
      }),
    );
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`serve did not start: ${err}`));
    }, 20_000);
    child.stderr!.on('data', (d) => {
      err += d;
      const m = /serving the \/v1 API on (http:\/\/\S+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        const url = m[1]!;
        resolve({
          url,
          port: Number(new URL(url).port),
          child,
          stderr: () => err,
          alive: () => !exited,
          stop: async () => {
            if (exited) return;
            child.kill('SIGTERM');
            const force = setTimeout(() => child.kill('SIGKILL'), 5_000);
            await exit;
            clearTimeout(force);
          },
        });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited ${code}: ${err}`));
    });
  });
}

/** VmRSS of a process, in MiB. */
export function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

/** Samples a process's RSS every `everyMs` until stopped; `stop()` returns the peak in MiB. */
export function watchRss(pid: number, everyMs = 25): { peak: () => number; stop: () => number } {
  let peak = rssMiB(pid);
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssMiB(pid));
    } catch {
      // the process is gone; the test says so on its own
    }
  }, everyMs);
  return {
    peak: () => peak,
    stop: () => {
      clearInterval(timer);
      return peak;
    },
  };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are JSON whose shape the assertions check
  json: () => any;
}

/** One HTTP request with exactly these headers (node:http lets a test set Host and Origin); bounded. */
export function rawHttp(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method, path, headers, setHost: !('host' in headers), timeout: 30_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in 30 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** A WebSocket upgrade done by hand over node:net, so a test can send frames no WebSocket library would. */
export interface RawSocket {
  socket: Socket;
  /** The status line's code (101 when upgraded). */
  status: number;
  /** The response head and, for a refusal, its body. */
  response: string;
  /** Resolves with the close code the server sent (or null) once the connection has ended; bounded. */
  closed: (timeoutMs?: number) => Promise<number | null>;
  close: () => void;
}

export async function rawUpgrade(
  port: number,
  path: string,
  headers: Record<string, string> = {},
  /** Bytes sent in the same write as the request (frames that arrive with the upgrade itself). */
  after?: Buffer,
): Promise<RawSocket> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  const lines = [
    `GET ${path} HTTP/1.1`,
    ...(Object.keys(headers).some((k) => k.toLowerCase() === 'host') ? [] : [`Host: 127.0.0.1:${port}`]),
    'Upgrade: websocket',
    'Connection: Upgrade',
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
    'Sec-WebSocket-Version: 13',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`);
  socket.write(after ? Buffer.concat([head, after]) : head);
  let buf = Buffer.alloc(0);
  let ended = false;
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    wake();
  });
  socket.on('close', () => {
    ended = true;
    wake();
  });
  const until = async (done: () => boolean, timeoutMs: number, what: string) => {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (ended) return false;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${path}: ${what} within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return true;
  };
  try {
    await until(() => buf.includes('\r\n\r\n'), 15_000, 'no response head');
  } catch (e) {
    socket.destroy();
    throw e;
  }
  const headEnd = buf.indexOf('\r\n\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(buf.toString('latin1'))?.[1] ?? 0);
  let response = buf.subarray(0, Math.max(0, headEnd)).toString('latin1');
  if (status !== 101) {
    // A refusal: read its body to the end.
    await until(() => false, 5_000, 'the refusal did not end').catch(() => {});
    response = buf.toString('utf8');
  }
  /** The close code of the first close frame the server sent, if any (server frames are unmasked). */
  const closeCode = (): number | null | undefined => {
    let i = headEnd + 4;
    while (i + 2 <= buf.length) {
      const opcode = buf[i]! & 0x0f;
      let len = buf[i + 1]! & 0x7f;
      let at = i + 2;
      if (len === 126) {
        if (at + 2 > buf.length) return undefined;
        len = buf.readUInt16BE(at);
        at += 2;
      } else if (len === 127) {
        if (at + 8 > buf.length) return undefined;
        len = Number(buf.readBigUInt64BE(at));
        at += 8;
      }
      if (at + len > buf.length) return undefined;
      if (opcode === 0x8) return len >= 2 ? buf.readUInt16BE(at) : null;
      i = at + len;
    }
    return undefined;
  };
  return {
    socket,
    status,
    response,
    closed: async (timeoutMs = 15_000) => {
      try {
        await until(() => closeCode() !== undefined, timeoutMs, 'the server did not close the connection');
      } finally {
        socket.destroy();
      }
      return closeCode() ?? null;
    },
    close: () => socket.destroy(),
  };
}

/** A masked client frame (what a browser or ws sends); `fin` false makes a fragment. */
export function clientFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const len = payload.length;
  const header =
    len < 126
      ? Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | len])
      : len < 65536
        ? Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | 126, len >> 8, len & 0xff])
        : Buffer.concat([Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | 127]), bigLength(len)]);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i]! ^= mask[i % 4]!;
  return Buffer.concat([header, mask, masked]);
}

function bigLength(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}
