/**
 * IAM policies of services and jobs (`:getIamPolicy`, `:setIamPolicy`, `:testIamPermissions`), as far as Cloud Run
 * reads them: a service whose policy grants `roles/run.invoker` to `allUsers` is public (what
 * `gcloud run deploy --allow-unauthenticated` sets), like one with `invokerIamDisabled`. A new resource has an empty
 * policy (version 1 and an etag); a set with a stale etag is refused as Google refuses it.
 */
import { randomBytes } from 'node:crypto';
import { GoogleApiError, invalidArgument } from './errors.js';
import type { Json } from './resources.js';

export interface Binding {
  role: string;
  members: string[];
  condition?: Json;
}

export interface Policy {
  version?: number;
  bindings?: Binding[];
  etag: string;
}

const newEtag = () => randomBytes(8).toString('base64');

export class Policies {
  private readonly byResource = new Map<string, Policy>();

  get(resource: string): Policy {
    let p = this.byResource.get(resource);
    if (!p) {
      p = { version: 1, etag: newEtag() };
      this.byResource.set(resource, p);
    }
    return structuredClone(p);
  }

  set(resource: string, body: Json | undefined): Policy {
    const policy = body?.policy as Partial<Policy> | undefined;
    if (!policy || typeof policy !== 'object') throw invalidArgument('Request contains an invalid argument.');
    const current = this.get(resource);
    if (policy.etag && policy.etag !== current.etag) {
      throw new GoogleApiError(
        'ABORTED',
        'There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.',
      );
    }
    const bindings = (policy.bindings ?? []).filter((b) => b.members?.length);
    const next: Policy = { version: policy.version ?? 1, ...(bindings.length ? { bindings } : {}), etag: newEtag() };
    this.byResource.set(resource, next);
    return structuredClone(next);
  }

  /** The caller holds every permission it asks about (the fake knows one caller). */
  test(body: Json | undefined): Json {
    const permissions = Array.isArray(body?.permissions) ? (body.permissions as string[]) : [];
    return permissions.length ? { permissions } : {};
  }

  /** Whether anyone may invoke the resource (`allUsers` holds roles/run.invoker). */
  isPublic(resource: string): boolean {
    return (this.byResource.get(resource)?.bindings ?? []).some(
      (b) => b.role === 'roles/run.invoker' && b.members.includes('allUsers'),
    );
  }

  forget(resource: string): void {
    this.byResource.delete(resource);
  }
}
