/**
 * The workstation TCP tunnel, as `gcloud workstations start-tcp-tunnel` opens it (PROTOCOLS.md §3): one WebSocket
 * per TCP connection to `wss://{host}/_workstation/tcp/{port}` with `Authorization: Bearer {access token}` (from
 * generateAccessToken), no subprotocol, raw bytes both ways (sent as binary frames; text frames are taken too). An
 * upgrade answered 503 means nothing listens on that port in the workstation.
 */
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { rootCertificates } from 'node:tls';
import { ProviderError, UnavailableError } from '../../errors.js';
import { openTunnelSocket } from '../../exec/tunnel.js';

export interface TunnelTarget {
  /** The workstation's `host` (`name.cluster-hash.cloudworkstations.dev`, or a fake's `127.0.0.1:port`). */
  host: string;
  port: number;
  accessToken: string;
  /** A CA bundle trusted besides Node's own (CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE). */
  caFile?: string;
  /** How long the upgrade may take (default 30 s). */
  timeoutMs?: number;
}

/** Opens one tunnelled connection to `port` in the workstation: a byte stream, ended when either side closes. */
export function openTunnel(t: TunnelTarget): Promise<Duplex> {
  return openTunnelSocket(`wss://${t.host}/_workstation/tcp/${t.port}`, {
    headers: { authorization: `Bearer ${t.accessToken}` },
    ...(t.caFile ? { ca: [...rootCertificates, readFileSync(t.caFile, 'utf8')] } : {}),
    timeoutMs: t.timeoutMs,
    refused: (status) => {
      if (status === 503)
        return new UnavailableError(`nothing listens on port ${t.port} in the workstation (503 from its host)`);
      if (status === 401 || status === 403) {
        const e = new ProviderError(
          `the workstation's host refused the tunnel (${status}): is the access token valid?`,
        );
        return Object.assign(e, { hostStatus: status });
      }
      return new UnavailableError(`the workstation's host answered ${status} to the tunnel to port ${t.port}`);
    },
    unreachable: (e) => new UnavailableError(`cannot open the tunnel to ${t.host}: ${e.message}`),
  });
}
