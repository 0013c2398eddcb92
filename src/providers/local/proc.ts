/**
 * Host-side process bookkeeping for the local sandbox. A pid alone can be reused, so every process onmemos
 * records is identified by pid plus its kernel start time (field 22 of /proc/PID/stat).
 */
import { readdirSync, readFileSync } from 'node:fs';

export interface ProcRef {
  pid: number;
  start: string;
}

function statFields(pid: number): string[] | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may contain spaces and parentheses: split after the last ')'.
  const close = text.lastIndexOf(')');
  return ['', '', ...text.slice(close + 2).split(' ')];
}

export function procRef(pid: number): ProcRef | undefined {
  const f = statFields(pid);
  return f ? { pid, start: f[21] ?? '' } : undefined;
}

/** True while the recorded process (not a later one with the same pid) is alive and not a zombie. */
export function isAlive(ref: ProcRef | undefined): boolean {
  if (!ref) return false;
  const f = statFields(ref.pid);
  return !!f && f[21] === ref.start && f[2] !== 'Z';
}

export function signalRef(ref: ProcRef | undefined, signal: NodeJS.Signals | number): void {
  if (ref && isAlive(ref)) trySignal(ref.pid, signal);
}

export function trySignal(pid: number, signal: NodeJS.Signals | number): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

export interface ProcEntry {
  pid: number;
  ppid: number;
  pgrp: number;
}

/** Every live process this /proc shows (the host's, or a session's own inside it), zombies left out. */
export function processTable(): ProcEntry[] {
  const out: ProcEntry[] = [];
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const f = statFields(pid);
    if (!f || f[2] === 'Z') continue;
    out.push({ pid, ppid: Number(f[3]), pgrp: Number(f[4]) });
  }
  return out;
}

/** Every uid (real, effective, saved, filesystem) that some process on this /proc has, zombies included. */
export function processUids(): Set<number> {
  const out = new Set<number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let text: string;
    try {
      text = readFileSync(`/proc/${name}/status`, 'utf8');
    } catch {
      continue;
    }
    const line = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$/m.exec(text);
    for (const u of line?.slice(1) ?? []) out.add(Number(u));
  }
  return out;
}

/** Every live descendant of `root`, found from the parent links in /proc. */
export function descendants(root: number, table: ProcEntry[] = processTable()): number[] {
  const children = new Map<number, number[]>();
  for (const p of table) {
    const list = children.get(p.ppid);
    if (list) list.push(p.pid);
    else children.set(p.ppid, [p.pid]);
  }
  const out: number[] = [];
  const stack = [...(children.get(root) ?? [])];
  while (stack.length > 0 && out.length < 100_000) {
    const pid = stack.pop()!;
    out.push(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

/**
 * SIGKILLs `root`'s process group and every descendant, repeating while new ones appear (a process may fork
 * between the scan and the kill). A process already killed cannot fork: it is not waited for (it may take tens of
 * ms to exit), only one not seen before makes another round. Bounded: at most 20 rounds.
 */
export function killTree(root: number, opts: { group?: boolean; includeRoot?: boolean } = {}): void {
  const killed = new Set<number>();
  for (let round = 0; round < 20; round++) {
    const pids = descendants(root).filter((pid) => !killed.has(pid));
    if (opts.group) trySignal(-root, 'SIGKILL');
    for (const pid of pids) if (trySignal(pid, 'SIGKILL')) killed.add(pid);
    if (opts.includeRoot) trySignal(root, 'SIGKILL');
    if (pids.length === 0) return;
  }
}
