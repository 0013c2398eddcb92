/**
 * A session as a Cloud Workstation, and back: the Workstation (API v1) a create request becomes, and the session its
 * labels and annotations describe, so that list and get rebuild it from the API alone. The workstation's config
 * (its cluster's, made by an administrator) decides the image, machine and disk: a request's template is recorded,
 * not applied. Pure functions: no client, no I/O.
 */

import {
  type CreateSessionRequest,
  type Session,
  type SessionStatus,
  sessionEnvironment,
} from '../../session/model.js';
import { boundedName, SESSION_ANNOTATION, SESSION_LABEL, sessionLabels } from '../google.js';

/** Workstation ids: lowercase letters, digits and '-', starting with a letter, at most 63 characters. */
export const MAX_WORKSTATION_ID = 63;

export function workstationId(sessionId: string): string {
  return boundedName(sessionId, MAX_WORKSTATION_ID);
}

export const LABEL = SESSION_LABEL;
export const ANNOTATION = SESSION_ANNOTATION;

export function workstationObject(id: string, req: CreateSessionRequest, now: number) {
  return {
    displayName: `onmemos ${req.namespace}/${req.user}`,
    labels: {
      [LABEL.managedBy]: 'onmemos',
      [LABEL.namespace]: req.namespace,
      [LABEL.user]: req.user,
      [LABEL.template]: req.template,
    },
    annotations: {
      [ANNOTATION.session]: id,
      [ANNOTATION.created]: new Date(now).toISOString(),
      [ANNOTATION.ttl]: String(req.ttl_minutes),
      [ANNOTATION.expires]: new Date(now + req.ttl_minutes * 60_000).toISOString(),
    },
    // The container's environment (its own processes); commands over SSH get the same from the exec wrapper.
    env: { ...sessionEnvironment({ id, namespace: req.namespace, user: req.user }), ...req.env },
  };
}

/** The parts of a Workstation this file reads (the client's IWorkstation fits). */
export interface WorkstationLike {
  name?: string | null;
  uid?: string | null;
  host?: string | null;
  state?: string | number | null;
  reconciling?: boolean | null;
  labels?: Record<string, string> | null;
  annotations?: Record<string, string> | null;
  env?: Record<string, string> | null;
}

/** Workstation.State, as a name (get, list) or a number (an operation's result): PROTOCOLS.md §3. */
const STATES: Record<string, SessionStatus> = {
  STATE_STARTING: 'starting',
  1: 'starting',
  STATE_RUNNING: 'running',
  2: 'running',
  STATE_STOPPING: 'stopping',
  3: 'stopping',
  STATE_STOPPED: 'stopped',
  4: 'stopped',
};

export function statusOf(w: WorkstationLike, now = Date.now()): SessionStatus {
  const expires = w.annotations?.[ANNOTATION.expires];
  if (expires && Date.parse(expires) <= now) return 'expired';
  return STATES[String(w.state ?? '')] ?? 'creating';
}

/** The workstation's web address (its `host` serves HTTPS on 443), or null before it has one. */
export function webUrl(w: WorkstationLike): string | null {
  return w.host ? `https://${w.host}` : null;
}

/** The session a workstation describes, or undefined for a workstation that is not an onmemos session. */
export function sessionOf(w: WorkstationLike, now = Date.now()): Session | undefined {
  const base = sessionLabels(w, workstationId, now);
  if (!base) return undefined;
  return {
    ...base,
    provider: 'workstations',
    status: statusOf(w, now),
    url: webUrl(w),
    websocket: null,
    ssh: true,
    details: {
      workstation_name: w.name,
      ...(w.host ? { host: w.host } : {}),
    },
  };
}
