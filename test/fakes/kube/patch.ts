/**
 * PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902: add, remove, replace, test, copy, move), and
 * strategic merge patch read as a merge patch. The last is exact for maps (labels, annotations, which is what
 * clients patch on pods) but replaces lists where the real server merges them by key.
 * client-node 1.x sends application/json-patch+json unless told otherwise.
 */
import { badRequest, unsupportedMediaType } from './status.js';

type Json = unknown;
const isObject = (v: Json): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function mergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return structuredClone(patch);
  const out: Record<string, Json> = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** "/metadata/labels/a~1b" → ["metadata", "labels", "a/b"]. */
function pointer(path: unknown): string[] {
  if (typeof path !== 'string' || (path !== '' && !path.startsWith('/')))
    throw badRequest(`invalid JSON pointer: ${String(path)}`);
  return path === ''
    ? []
    : path
        .slice(1)
        .split('/')
        .map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'));
}

function parentOf(doc: Json, parts: string[]): { parent: Record<string, Json> | Json[]; key: string } {
  let cur = doc;
  for (const p of parts.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[Number(p)];
    else if (isObject(cur)) cur = cur[p];
    else cur = undefined;
    if (cur === undefined)
      throw badRequest(
        `the server rejected our request due to an error in our request: doc is missing path: /${parts.join('/')}`,
      );
  }
  if (!Array.isArray(cur) && !isObject(cur)) throw badRequest(`doc is missing path: /${parts.join('/')}`);
  return { parent: cur, key: parts[parts.length - 1] ?? '' };
}

function get(doc: Json, parts: string[]): Json {
  let cur = doc;
  for (const p of parts) cur = Array.isArray(cur) ? cur[Number(p)] : isObject(cur) ? cur[p] : undefined;
  return cur;
}

export function jsonPatch(doc: Json, ops: Json): Json {
  if (!Array.isArray(ops)) throw badRequest('a JSON patch must be a list of operations');
  let out = structuredClone(doc);
  for (const op of ops) {
    if (!isObject(op)) throw badRequest('a JSON patch operation must be an object');
    const parts = pointer(op.path);
    const set = (value: Json) => {
      if (parts.length === 0) {
        out = structuredClone(value);
        return;
      }
      const { parent, key } = parentOf(out, parts);
      if (Array.isArray(parent)) {
        const i = key === '-' ? parent.length : Number(key);
        if (!(i >= 0 && i <= parent.length)) throw badRequest(`index out of range: ${key}`);
        if (op.op === 'add') parent.splice(i, 0, structuredClone(value));
        else parent[i] = structuredClone(value);
      } else parent[key] = structuredClone(value);
    };
    const remove = (at: string[]) => {
      const { parent, key } = parentOf(out, at);
      if (Array.isArray(parent)) parent.splice(Number(key), 1);
      else {
        if (!(key in parent))
          throw badRequest(`the server rejected our request: unable to remove nonexistent key: ${key}`);
        delete parent[key];
      }
    };
    switch (op.op) {
      case 'add':
        set(op.value);
        break;
      case 'replace':
        if (get(out, parts) === undefined)
          throw badRequest(`replace operation does not apply: doc is missing key: ${op.path}`);
        set(op.value);
        break;
      case 'remove':
        remove(parts);
        break;
      case 'test':
        if (JSON.stringify(get(out, parts)) !== JSON.stringify(op.value))
          throw badRequest(`testing value ${op.path} failed`);
        break;
      case 'copy':
      case 'move': {
        const from = pointer(op.from);
        const value = get(out, from);
        if (value === undefined)
          throw badRequest(`${op.op} operation does not apply: doc is missing from path: ${op.from}`);
        if (op.op === 'move') remove(from);
        set(value);
        break;
      }
      default:
        throw badRequest(`Unexpected kind: ${String(op.op)}`);
    }
  }
  return out;
}

/** Applies a PATCH body of the given Content-Type. */
export function applyPatch(doc: Json, body: Json, contentType: string): Json {
  const type = contentType.split(';')[0]!.trim().toLowerCase();
  if (type === 'application/json-patch+json') return jsonPatch(doc, body);
  if (type === 'application/merge-patch+json' || type === 'application/strategic-merge-patch+json') {
    if (!isObject(body)) throw badRequest('a merge patch must be a JSON object');
    return mergePatch(doc, body);
  }
  throw unsupportedMediaType(type);
}
