/**
 * The hot path to the API server, without @kubernetes/client-node: loading that library costs ~90 ms, more than
 * everything else an `onmemos exec` on gke does. A command on one session needs one GET of its pod and the exec
 * upgrade, and for a kubeconfig whose user is a token, a token file, basic auth or a client certificate, the
 * TLS options and headers are read here from the kubeconfig directly. Anything else (an exec plugin such as
 * gke-gcloud-auth-plugin, an auth provider, a proxy) goes through client-node's own KubeConfig (gke.ts).
 */
import { readFileSync } from 'node:fs';
import type { KubeTarget } from './kubeconfig.js';

export interface KubeConnection {
  server: string;
  headers: Record<string, string>;
  tls: { ca?: Buffer; cert?: Buffer; key?: Buffer; rejectUnauthorized?: boolean; servername?: string };
}

/** An API server's refusal, shaped as client-node's ApiException (a code and the Status body), for one mapping. */
export class KubeApiError extends Error {
  constructor(
    readonly code: number,
    readonly body: unknown,
  ) {
    super(`HTTP ${code}`);
  }
}

const data = (b64: string | undefined) => (b64 ? Buffer.from(b64, 'base64') : undefined);
const file = (p: string | undefined) => (p ? readFileSync(p) : undefined);

/** The connection of a kubeconfig context when it needs nothing but files; undefined when client-node must do it. */
export function simpleConnection(t: KubeTarget): KubeConnection | undefined {
  const c = t.cluster;
  const u = t.user;
  if (u.exec || u['auth-provider'] || c['proxy-url']) return undefined;
  const headers: Record<string, string> = {};
  const token = u.token ?? (u.tokenFile ? readFileSync(u.tokenFile, 'utf8').trim() : undefined);
  if (token) headers.authorization = `Bearer ${token}`;
  else if (u.username !== undefined && u.password !== undefined) {
    headers.authorization = `Basic ${Buffer.from(`${u.username}:${u.password}`).toString('base64')}`;
  }
  return {
    server: (c.server ?? '').replace(/\/+$/, ''),
    headers,
    tls: {
      ca: data(c['certificate-authority-data']) ?? file(c['certificate-authority']),
      cert: data(u['client-certificate-data']) ?? file(u['client-certificate']),
      key: data(u['client-key-data']) ?? file(u['client-key']),
      ...(c['insecure-skip-tls-verify'] ? { rejectUnauthorized: false } : {}),
      ...(c['tls-server-name'] ? { servername: c['tls-server-name'] } : {}),
    },
  };
}

/** One JSON request; a non-2xx answer rejects with KubeApiError, anything else with the socket's error. */
export async function kubeRequest(
  conn: KubeConnection,
  method: string,
  path: string,
  timeoutMs: number,
): Promise<unknown> {
  const url = new URL(conn.server + path);
  const https = url.protocol === 'https:';
  const { request } = https ? await import('node:https') : await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        headers: { ...conn.headers, accept: 'application/json' },
        ...(https ? conn.tls : {}),
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          size += d.length;
          if (size > 16 << 20) req.destroy(new Error('the API server sent more than 16 MiB'));
          else chunks.push(d);
        });
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {}
          const code = res.statusCode ?? 0;
          if (code >= 200 && code < 300) resolve(body);
          else reject(new KubeApiError(code, body));
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs / 1000}s`)));
    req.on('error', reject);
    req.end();
  });
}
