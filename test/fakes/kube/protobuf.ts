/**
 * The one protobuf body kubectl sends to the fake: `kubectl create namespace` posts the Namespace with
 * `Content-Type: application/vnd.kubernetes.protobuf` (its typed client's default) and does not retry in JSON on a
 * 415. Its other writes (run, create -f, delete, label, patch) are JSON, as is everything the fake answers (kubectl
 * accepts JSON back). So this reads the envelope (`k8s\0` + runtime.Unknown{typeMeta=1, raw=2}) and, of a
 * Namespace (metadata=1), the ObjectMeta fields a creator sets: name=1, generateName=2, namespace=3, labels=11,
 * annotations=12 (maps are repeated {key=1, value=2} entries). Any other kind is a 415.
 */
import { badRequest, unsupportedMediaType } from './status.js';

export const PROTOBUF = 'application/vnd.kubernetes.protobuf';
const MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

interface Field {
  no: number;
  /** Wire type 2 (length-delimited) payload; undefined for varints and fixed-width values, which are skipped. */
  bytes?: Buffer;
}

function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let at = 0;
  const varint = (): number => {
    let n = 0;
    let shift = 0;
    for (;;) {
      if (at >= buf.length) throw badRequest('truncated protobuf message');
      const b = buf[at++]!;
      n += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return n;
      shift += 7;
      if (shift > 63) throw badRequest('malformed protobuf varint');
    }
  };
  while (at < buf.length) {
    const key = varint();
    const no = Math.floor(key / 8);
    const type = key % 8;
    if (type === 0) varint();
    else if (type === 1) at += 8;
    else if (type === 5) at += 4;
    else if (type === 2) {
      const len = varint();
      if (at + len > buf.length) throw badRequest('truncated protobuf message');
      out.push({ no, bytes: buf.subarray(at, at + len) });
      at += len;
    } else throw badRequest(`unsupported protobuf wire type ${type}`);
    if (at > buf.length) throw badRequest('truncated protobuf message');
  }
  return out;
}

const text = (f: Field | undefined) => f?.bytes?.toString('utf8');

function map(entries: Field[]): Record<string, string> | undefined {
  if (entries.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const e of entries) {
    const kv = fields(e.bytes ?? Buffer.alloc(0));
    out[text(kv.find((f) => f.no === 1)) ?? ''] = text(kv.find((f) => f.no === 2)) ?? '';
  }
  return out;
}

/** The JSON form of a protobuf request body (a Namespace); 415 for any other kind. */
export function decodeProtobuf(body: Buffer): unknown {
  if (!body.subarray(0, 4).equals(MAGIC))
    throw badRequest('the protobuf body does not start with the k8s magic number');
  const unknown = fields(body.subarray(4));
  const typeMeta = fields(unknown.find((f) => f.no === 1)?.bytes ?? Buffer.alloc(0));
  const apiVersion = text(typeMeta.find((f) => f.no === 1));
  const kind = text(typeMeta.find((f) => f.no === 2));
  if (kind !== 'Namespace' || apiVersion !== 'v1') throw unsupportedMediaType(`${PROTOBUF} (${apiVersion} ${kind})`);
  const raw = fields(unknown.find((f) => f.no === 2)?.bytes ?? Buffer.alloc(0));
  const meta = fields(raw.find((f) => f.no === 1)?.bytes ?? Buffer.alloc(0));
  const metadata: Record<string, unknown> = {};
  const name = text(meta.find((f) => f.no === 1));
  const generateName = text(meta.find((f) => f.no === 2));
  const labels = map(meta.filter((f) => f.no === 11));
  const annotations = map(meta.filter((f) => f.no === 12));
  if (name) metadata.name = name;
  if (generateName) metadata.generateName = generateName;
  if (labels) metadata.labels = labels;
  if (annotations) metadata.annotations = annotations;
  return { apiVersion, kind, metadata };
}
