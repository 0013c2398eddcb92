// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the prologue is sh, where ${x} is sh's own
/**
 * Runs one command inside the session, as the agent's child, and turns it into a RemoteProcess (the shape every
 * transport shares, src/exec/process.ts): through pipes, or through a pty from the session's own devpts
 * (node-pty). The agent already runs inside the sandbox as the session user, so the environment, the working
 * directory and argv are applied here, inside, after privileges were dropped — never by a process on the host.
 *
 * Every command starts through a fixed sh prologue that joins its exec group (a cgroup of its own where the
 * session has one), closes the agent's listening socket, makes itself the likelier OOM victim than the agent,
 * and changes to the working directory; user values arrive only as positional parameters.
 */
import { spawn as spawnChild } from 'node:child_process';
import { chownSync } from 'node:fs';
import { pipedProcess, ptyProcess } from '../exec/child.js';
import { CHANGE_DIRECTORY_AND_EXEC } from '../exec/lookup.js';
import type { ExecSpec, RemoteProcess } from '../exec/process.js';
import { descendants, processTable } from '../providers/local/proc.js';

/** The fd the agent listens on (see LISTEN_FD in the local provider); closed in every command. */
export const AGENT_LISTEN_FD = 3;
/**
 * The agent's second socket (FD.fdListen in the local provider), for execs that pass their output descriptors.
 * Close-on-exec in the agent: no command inherits it (sh, which runs the prologue, cannot name a descriptor above 9).
 */
export const AGENT_FDPASS_FD = 14;

/**
 * The arguments: the files to write 0 into to join the exec's group (ExecGroups.create), `--`, the working
 * directory, then argv; the directory and argv[0] are checked as every transport does (../exec/lookup.ts).
 */
export const EXEC_PROLOGUE = [
  'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift',
  `exec ${AGENT_LISTEN_FD}>&-`,
  'echo 500 > /proc/self/oom_score_adj 2>/dev/null',
  CHANGE_DIRECTORY_AND_EXEC,
].join('\n');

export function prologueArgv(joinFiles: string[], cwd: string, argv: string[]): string[] {
  return ['/bin/sh', '-c', EXEC_PROLOGUE, 'onmemos-exec', ...joinFiles, '--', cwd, ...argv];
}

/** How an exec's processes are found and signalled: its cgroup when the session has them, else its process tree. */
export interface ExecGroup {
  /** The files the command writes 0 into to join its group before it runs (empty without cgroups). */
  joinFiles: string[];
  /** Sends `signal` to every process of the exec; SIGKILL kills it whole, race-free where the kernel allows. */
  signal(signal: NodeJS.Signals, mainPid: number | undefined): void;
  /** Called when the exec has ended; removes the group if nothing of it is left. */
  release(): void;
}

/**
 * The user a command runs as when the agent runs as root and drops privileges for each command (the Cloud Run
 * agent; the local agent is already the session user). The agent's supplementary groups are what the command keeps
 * (node-pty's fork does not clear them): an agent that drops clears its own first (cloud-main.ts).
 */
export interface RunAs {
  uid: number;
  gid: number;
}

export function spawnPiped(
  spec: ExecSpec,
  env: Record<string, string>,
  cwd: string,
  group: ExecGroup,
  as?: RunAs,
): RemoteProcess {
  const child = spawnChild('/bin/sh', prologueArgv(group.joinFiles, cwd, spec.argv).slice(1), {
    argv0: 'sh',
    detached: true, // its own session and process group: signals to the agent do not reach it, and vice versa
    env,
    cwd: '/',
    // Output descriptors the caller passed (a pipe of its own) are the command's, in place of pipes to the agent.
    stdio: [spec.stdin ? 'pipe' : 'ignore', spec.outputFds?.stdout ?? 'pipe', spec.outputFds?.stderr ?? 'pipe'],
    ...(as ? { uid: as.uid, gid: as.gid } : {}),
  });
  return pipedProcess(child, { kill: (signal) => group.signal(signal, child.pid), released: () => group.release() });
}

/** TTY exec through node-pty (loaded only here), on a pty of the session's own devpts. */
export async function spawnTty(
  spec: ExecSpec,
  env: Record<string, string>,
  cwd: string,
  group: ExecGroup,
  as?: RunAs,
): Promise<RemoteProcess> {
  const pty = await import('node-pty');
  const argv = prologueArgv(group.joinFiles, cwd, spec.argv);
  const term = pty.spawn(argv[0]!, argv.slice(1), {
    name: env.TERM ?? 'xterm-256color',
    cols: spec.cols ?? 80,
    rows: spec.rows ?? 24,
    cwd: '/',
    env,
    encoding: null,
    ...(as ? { uid: as.uid, gid: as.gid } : {}),
  });
  // The terminal is the command's, as login and sshd make it: its user may open it by name (`tty`, write, mesg).
  const ptsName = (term as unknown as { ptsName?: string }).ptsName; // UnixTerminal's, not in the typings
  if (as && ptsName) {
    try {
      chownSync(ptsName, as.uid, as.gid);
    } catch {}
  }
  return ptyProcess(term, { kill: (signal) => group.signal(signal, term.pid), released: () => group.release() });
}

/**
 * Without cgroups an exec is its main process's tree plus its process group: a process that left both (setsid
 * and a double fork) is out of reach until the session ends. Bounded: at most 20 rounds for SIGKILL.
 */
export function treeGroup(): ExecGroup {
  const members = (root: number) => {
    const table = processTable();
    const out = new Set([...table.filter((p) => p.pgrp === root).map((p) => p.pid), ...descendants(root, table)]);
    if (table.some((p) => p.pid === root)) out.add(root);
    return [...out];
  };
  return {
    joinFiles: [],
    signal(signal, mainPid) {
      if (!mainPid) return;
      for (let round = 0; round < (signal === 'SIGKILL' ? 20 : 1); round++) {
        const pids = members(mainPid);
        for (const pid of pids) {
          try {
            process.kill(pid, signal);
          } catch {}
        }
        if (pids.length === 0) return;
      }
    },
    release() {},
  };
}
