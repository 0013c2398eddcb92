/**
 * The secret that lets a caller into a session's agent (README: onmemos agent). It is made at create and never
 * printed or stored in the service: the service holds only its SHA-256 (the agent's ONMEMOS_AGENT_SECRET_SHA256)
 * and a random nonce (an annotation); the secret is HMAC-SHA256(key, service name + nonce). The key is this
 * user's: ONMEMOS_CLOUDRUN_KEY (give a server the same one), else `cloudrun.key` in the onmemos config
 * directory (0600 in a 0700 directory, made on first use). So any onmemos holding the key reaches the session, and
 * reading the service's configuration, or knowing its URL, is not enough.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { chmodSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { configDir } from '../../config.js';
import { UserError } from '../../errors.js';

const KEY_FILE = 'cloudrun.key';

/** The key, from the environment or the config directory (made there, 0600, when absent). */
export function secretKey(env: NodeJS.ProcessEnv): Buffer {
  if (env.ONMEMOS_CLOUDRUN_KEY) {
    if (env.ONMEMOS_CLOUDRUN_KEY.length < 32)
      throw new UserError('ONMEMOS_CLOUDRUN_KEY must be at least 32 characters');
    return Buffer.from(env.ONMEMOS_CLOUDRUN_KEY);
  }
  const dir = configDir(env);
  const file = join(dir, KEY_FILE);
  try {
    const key = readFileSync(file, 'utf8').trim();
    if (key.length >= 32) return Buffer.from(key);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  // Written whole aside, then linked into place: link() fails if the file is there, so two onmemos making it at
  // once keep the first one's, and neither ever reads a key half written.
  const tmp = join(dir, `.${KEY_FILE}.${process.pid}.${randomBytes(4).toString('hex')}`);
  writeFileSync(tmp, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600 });
  try {
    linkSync(tmp, file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  } finally {
    rmSync(tmp, { force: true });
  }
  const key = readFileSync(file, 'utf8').trim();
  if (key.length < 32) throw new UserError(`${file} holds no key (under 32 characters): remove it to make a new one`);
  return Buffer.from(key);
}

export function newNonce(): string {
  return randomBytes(16).toString('base64url');
}

export function sessionSecret(key: Buffer, service: string, nonce: string): string {
  return createHmac('sha256', key).update(`${service}\n${nonce}`).digest('base64url');
}
