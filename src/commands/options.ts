/** Option parsers shared by commands. They throw InvalidArgumentError, which commander reports as usage. */
import { InvalidArgumentError } from 'commander';
import { OnmemosError } from '../errors.js';
import { parseEnvAssignment, validateName, validateTtl } from '../session/model.js';

function wrap<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof OnmemosError) throw new InvalidArgumentError(e.message);
    throw e;
  }
}

export const parseNamespace = (v: string) => wrap(() => validateName('namespace', v));
export const parseUser = (v: string) => wrap(() => validateName('user', v));

export function parseTtlMinutes(v: string): number {
  if (!/^\d+(\.\d+)?$/.test(v)) throw new InvalidArgumentError('expected a number of minutes, e.g. 60 or 0.5');
  return wrap(() => validateTtl(Number(v)));
}

export function parseMinutes(v: string): number {
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || n > 10_000_000) throw new InvalidArgumentError('expected a number of minutes');
  return n;
}

export function collectEnv(v: string, prev: Record<string, string> = {}): Record<string, string> {
  const [k, val] = wrap(() => parseEnvAssignment(v));
  return { ...prev, [k]: val };
}

export function parseSeconds(v: string): number {
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0) || n > 7 * 24 * 3600) {
    throw new InvalidArgumentError('expected a positive number of seconds');
  }
  return n;
}

export function choice<T extends string>(allowed: readonly T[]) {
  return (v: string): T => {
    if (!(allowed as readonly string[]).includes(v)) {
      throw new InvalidArgumentError(`expected one of ${allowed.join(', ')}`);
    }
    return v as T;
  };
}
