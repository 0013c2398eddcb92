/**
 * Label and field selectors as the API server reads them from `labelSelector=` and `fieldSelector=`:
 * `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`, `a>1`, `a<1`, comma-separated (all must hold);
 * fields take `=`, `==` and `!=` on the fields each resource supports. URLSearchParams has already turned the
 * form encoding's `+` into a space.
 */
import { badRequest } from './status.js';

type Labels = Record<string, string> | undefined;
export type Matcher<T> = (obj: T) => boolean;

interface Requirement {
  key: string;
  op: 'exists' | '!' | '=' | '!=' | 'in' | 'notin' | '>' | '<';
  values: string[];
}

const NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const PREFIX = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** A label key (`[prefix/]name`): the message when it is not one, else undefined. */
export function labelKeyProblem(key: string): string | undefined {
  const slash = key.lastIndexOf('/');
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  if (prefix !== undefined && (prefix.length === 0 || prefix.length > 253 || !PREFIX.test(prefix))) {
    return "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
  }
  if (!NAME.test(name)) {
    return "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
  }
  return undefined;
}

export function labelValueProblem(value: string): string | undefined {
  if (value.length > 63) return 'must be no more than 63 characters';
  if (!VALUE.test(value)) {
    return "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
  }
  return undefined;
}

/** Splits at commas outside parentheses. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const c of s) {
    if (c === '(') depth++;
    if (c === ')') depth--;
    if (c === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

function parseRequirement(raw: string): Requirement {
  const s = raw.trim();
  const bad = (why: string) => badRequest(`unable to parse requirement: ${why}`);
  let m = /^!\s*(\S+)$/.exec(s);
  if (m) return check({ key: m[1]!, op: '!', values: [] });
  m = /^(\S+?)\s+(in|notin)\s*\((.*)\)$/.exec(s);
  if (m) {
    const values = m[3]!.split(',').map((v) => v.trim());
    return check({ key: m[1]!, op: m[2] as 'in' | 'notin', values });
  }
  m = /^([^\s=!<>]+)\s*(==|=|!=|>|<)\s*(.*)$/.exec(s);
  if (m) {
    const op = m[2] === '==' ? '=' : (m[2] as Requirement['op']);
    return check({ key: m[1]!, op, values: [m[3]!.trim()] });
  }
  if (/^[^\s=!<>(),]+$/.test(s)) return check({ key: s, op: 'exists', values: [] });
  throw bad(`found '${s}', expected: !, identifier, or 'end of string'`);

  function check(r: Requirement): Requirement {
    const keyProblem = labelKeyProblem(r.key);
    if (keyProblem) throw bad(`key: Invalid value: ${JSON.stringify(r.key)}: ${keyProblem}`);
    for (const v of r.values) {
      if ((r.op === '>' || r.op === '<') && !/^-?\d+$/.test(v)) {
        throw bad(`for 'Gt', 'Lt' operators, the value must be an integer`);
      }
      const valueProblem = r.op === '>' || r.op === '<' ? undefined : labelValueProblem(v);
      if (valueProblem) throw bad(`values[0][${r.key}]: Invalid value: ${JSON.stringify(v)}: ${valueProblem}`);
    }
    return r;
  }
}

/** The matcher for a `labelSelector=` value (empty or absent: everything). BadRequest when it does not parse. */
export function labelSelector(raw: string | null): Matcher<Labels> {
  if (raw === null || raw.trim() === '') return () => true;
  const reqs = splitTop(raw).map(parseRequirement);
  return (labels) =>
    reqs.every((r) => {
      const has = labels !== undefined && Object.hasOwn(labels, r.key);
      const v = has ? labels[r.key]! : undefined;
      switch (r.op) {
        case 'exists':
          return has;
        case '!':
          return !has;
        case '=':
        case 'in':
          return has && r.values.includes(v!);
        case '!=':
        case 'notin':
          return !has || !r.values.includes(v!);
        case '>':
          return has && /^-?\d+$/.test(v!) && Number(v) > Number(r.values[0]);
        case '<':
          return has && /^-?\d+$/.test(v!) && Number(v) < Number(r.values[0]);
      }
      return false;
    });
}

/**
 * The matcher for a `fieldSelector=` value, given the fields the resource supports (name → value of an object).
 * An unsupported field is a BadRequest, as on a real server.
 */
export function fieldSelector<T>(
  raw: string | null,
  fields: Record<string, (obj: T) => string | undefined>,
): Matcher<T> {
  if (raw === null || raw.trim() === '') return () => true;
  const terms = raw.split(',').map((t) => {
    const m = /^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$/.exec(t);
    if (!m) throw badRequest(`invalid selector: '${raw}'; can't understand '${t}'`);
    const get = fields[m[1]!];
    if (!get) throw badRequest(`field label not supported: ${m[1]}`);
    return { get, negate: m[2] === '!=', value: m[3]! };
  });
  return (obj) => terms.every((t) => ((t.get(obj) ?? '') === t.value) !== t.negate);
}
