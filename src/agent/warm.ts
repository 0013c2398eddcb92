// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the script is bash, where ${x} is bash's own
/**
 * A command's process started ahead of time, already in the exec group it will run in. Moving a process into a
 * cgroup through `cgroup.procs` waits for an RCU grace period when no move happened just before — 5 to 20 ms, the
 * largest part of a short command's time in the agent (cgroup v2; on v1 a process joins through `tasks`, which
 * does not wait: joinFile in cgroups.ts), and bash takes a few ms to start. So the agent keeps one process parked
 * in the next exec group:
 * bash, with an empty environment, that has joined the group and blocks reading its command from fd 4. An exec
 * that takes it writes the environment, the working directory and argv there as NUL-terminated items (bash's
 * mapfile reads them into an array: nothing is evaluated), and bash execs the same prologue every command runs
 * through (spawn.ts), with exactly the command's environment (`env -i`). Commands on a tty, and any exec that finds
 * no parked process ready, start the ordinary way.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { pipedProcess } from '../exec/child.js';
import type { ExecSpec, RemoteProcess } from '../exec/process.js';
import { type FdPass, handleFd, type OutputStream, preambleByte } from '../native/fdpass.js';
import { AGENT_LISTEN_FD, EXEC_PROLOGUE, type ExecGroup } from './spawn.js';

const BASH = '/bin/bash';
const ENV = '/usr/bin/env';
/** The descriptor the parked process reads its command from. */
const SPEC_FD = 4;
/** The socket the parked process's fdexec takes an exec's passed output descriptors from (native/fdexec.c). */
const FDS_FD = 5;
const MAX_SPEC_CHARS = 16 * 1024;

/**
 * $1: the prologue; $2: fdexec's path (empty without it); $3: how many join files follow; then the files.
 * Closes the agent's listening socket first of all, then joins the group, then waits for
 * `fds NUL, count NUL, count x KEY=VALUE NUL, cwd NUL, argv... NUL`. With fds = 1 the exec passed output
 * descriptors: fdexec takes them from fd 5 and puts them in place before the prologue runs (same pid, same group).
 */
export const WARM_SCRIPT = [
  `exec ${AGENT_LISTEN_FD}>&-`,
  'p=$1; x=$2; n=$3; shift 3',
  'while [ "$n" -gt 0 ]; do echo 0 > "$1" || exit 125; shift; n=$((n - 1)); done',
  `mapfile -d '' -t -u ${SPEC_FD} s || exit 125`,
  `exec ${SPEC_FD}<&-`,
  'f=${s[0]}; s=("${s[@]:1}")',
  'k=${s[0]}',
  '[[ $k =~ ^[0-9]+$ ]] && [ "${#s[@]}" -ge $((k + 3)) ] || exit 125',
  `w=(); if [ "$f" = 1 ] && [ -n "$x" ]; then w=("$x" ${FDS_FD}); else exec ${FDS_FD}<&-; fi`,
  `exec "\${w[@]}" ${ENV} -i "\${s[@]:1:k}" /bin/sh -c "$p" onmemos-exec -- "\${s[@]:k+1}"`,
].join('\n');

/** fdexec (native/fdexec.c) inside the session, and the module that sends it an exec's descriptors. */
export interface FdExec {
  path: string;
  fdpass: FdPass;
}

interface Parked {
  child: ChildProcess;
  group: ExecGroup;
}

export interface WarmStarter {
  /** The parked process running `spec`, or undefined when none is ready (start it the ordinary way). */
  take(spec: ExecSpec, env: Record<string, string>, cwd: string): RemoteProcess | undefined;
  /** Parks a process in a new exec group, unless one is parked already. */
  refill(): void;
}

export function warmStarter(newGroup: () => ExecGroup, fdexec?: FdExec): WarmStarter {
  let parked: Parked | undefined;
  let disabled = !existsSync(BASH) || !existsSync(ENV);
  const discard = (p: Parked) => {
    if (parked === p) parked = undefined;
    for (const s of [
      p.child.stdin,
      p.child.stdout,
      p.child.stderr,
      (p.child.stdio as unknown as (Socket | null | undefined)[])[FDS_FD],
    ])
      s?.destroy();
    p.group.release();
  };
  return {
    refill() {
      if (parked || disabled) return;
      let group: ExecGroup;
      try {
        group = newGroup();
      } catch {
        return; // no exec group now: commands start the ordinary way (and report why)
      }
      const child = spawn(
        BASH,
        [
          '--norc',
          '--noprofile',
          '-c',
          WARM_SCRIPT,
          'onmemos-exec',
          EXEC_PROLOGUE,
          fdexec?.path ?? '',
          String(group.joinFiles.length),
          ...group.joinFiles,
        ],
        {
          argv0: 'bash',
          detached: true,
          env: {},
          cwd: '/',
          stdio: ['pipe', 'pipe', 'pipe', 'ignore', 'pipe', ...(fdexec ? ['pipe' as const] : [])],
        },
      );
      const p: Parked = { child, group };
      parked = p;
      child.on('error', () => {
        disabled = true;
        discard(p);
      });
      child.once('exit', () => {
        if (parked === p) discard(p); // died before it was used (killed from inside the session)
      });
      child.stdin?.on('error', () => {});
      (child.stdio[SPEC_FD] as Writable | null)?.on('error', () => {});
    },
    take(spec, env, cwd) {
      const p = parked;
      if (!p || spec.tty || p.child.exitCode !== null || p.child.signalCode !== null) return undefined;
      const specIn = p.child.stdio[SPEC_FD] as Writable | null;
      if (!specIn || specIn.destroyed || !p.child.stdin || !p.child.stdout || !p.child.stderr) return undefined;
      const passing = spec.outputFds !== undefined;
      const items = [
        passing ? '1' : '0',
        String(Object.keys(env).length),
        ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
        cwd,
      ];
      const text = `${[...items, ...spec.argv].join('\0')}\0`;
      // bash reads a pipe a byte at a time (~0.3 µs each): beyond this, the ordinary start is the quicker one.
      if (text.length > MAX_SPEC_CHARS) return undefined;
      const fdsOut = (p.child.stdio as unknown as (Socket | null | undefined)[])[FDS_FD];
      if (passing) {
        // The descriptors go first, to fdexec's socket (the parked bash waits for its command meanwhile).
        const sock = handleFd(fdsOut);
        const out = spec.outputFds!;
        const streams = (['stdout', 'stderr'] as OutputStream[]).filter((s) => out[s] !== undefined);
        if (!fdexec || sock === undefined) return undefined;
        try {
          fdexec.fdpass.sendFds(
            sock,
            preambleByte(streams),
            streams.map((s) => out[s]!),
          );
        } catch {
          return undefined; // the parked process is gone: the ordinary start
        }
      }
      fdsOut?.destroy();
      parked = undefined;
      specIn.end(text);
      if (!spec.stdin) p.child.stdin.end();
      const { child, group } = p;
      return pipedProcess(child, {
        kill: (signal) => group.signal(signal, child.pid),
        released: () => group.release(),
      });
    },
  };
}
