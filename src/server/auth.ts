/**
 * API keys: `X-API-Key` (or `?api_key=` on WebSocket upgrades only). A key may be scoped to namespaces (`KEY ns1,ns2` in a
 * key file). Keys are kept only as SHA-256 digests and compared in constant time against every key, and are
 * never logged.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { UserError } from '../errors.js';
import { validateName } from '../session/model.js';

export interface ApiKey {
  digest: Buffer;
  /** null: every namespace. */
  namespaces: string[] | null;
}

export interface Principal {
  /** Which key (a digest of it, never the key), for per-key limits; "anonymous" without authentication. */
  id: string;
  namespaces: string[] | null;
}

const digest = (key: string) => createHash('sha256').update(key).digest();

/** Parses keys, one per line: `KEY` or `KEY ns1,ns2`; blank lines and `#` comments are skipped. */
export function parseApiKeys(text: string): ApiKey[] {
  const keys: ApiKey[] = [];
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [key, scope, ...rest] = line.split(/\s+/);
    if (!key || rest.length > 0) throw new UserError(`API keys, line ${i + 1}: expected "KEY" or "KEY ns1,ns2"`);
    if (key.length < 16) throw new UserError(`API keys, line ${i + 1}: a key must have at least 16 characters`);
    const namespaces = scope ? scope.split(',').map((ns) => validateName('namespace', ns)) : null;
    keys.push({ digest: digest(key), namespaces });
  }
  return keys;
}

export class Auth {
  /** `keys` null: no authentication (only allowed on a loopback address, see serve). */
  constructor(private readonly keys: ApiKey[] | null) {}

  get enabled(): boolean {
    return this.keys !== null;
  }

  /** The principal for a presented key, or undefined. Every key is compared, whatever matched. */
  check(presented: string | undefined): Principal | undefined {
    if (this.keys === null) return { id: 'anonymous', namespaces: null };
    if (!presented) return undefined;
    const d = digest(presented);
    let found: ApiKey | undefined;
    for (const k of this.keys) if (timingSafeEqual(k.digest, d) && !found) found = k;
    return found ? { id: found.digest.toString('hex'), namespaces: found.namespaces } : undefined;
  }
}

export function allows(p: Principal, namespace: string): boolean {
  return p.namespaces === null || p.namespaces.includes(namespace);
}
