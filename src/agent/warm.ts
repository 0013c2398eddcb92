// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the script is bash, where ${x} is bash's own
/**
 * A command's process started ahead of time, already in the exec group it will run in. Moving a process into a
 * cgroup (v1) waits for an RCU grace period when no move happened just before — 5 to 20 ms here, the largest
 * part of a short command's time in the agent. So the agent keeps one process parked in the next exec group:
 * bash, with an empty environment, that has joined the group and blocks reading its command from fd 4. An exec
 * that takes it writes the environment, the working directory and argv there as NUL-terminated items (bash's
 * mapfile reads them into an array: nothing is evaluated), and bash execs the same prologue every command runs
 * through (spawn.ts), with exactly the command's environment (`env -i`). Commands on a tty, and any exec that finds
 * no parked process ready, start the ordinary way.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { pipedProcess } from '../exec/child.js';
import type { ExecSpec, RemoteProcess } from '../exec/process.js';
import { AGENT_LISTEN_FD, EXEC_PROLOGUE, type ExecGroup } from './spawn.js';

const BASH = '/bin/bash';
const ENV = '/usr/bin/env';
/** The descriptor the parked process reads its command from. */
const SPEC_FD = 4;
const MAX_SPEC_CHARS = 16 * 1024;

/**
 * $1: the prologue; $2: how many cgroup.procs files follow; then the files. Closes the agent's listening socket
 * first of all, then joins the group, then waits for `count NUL, count x KEY=VALUE NUL, cwd NUL, argv... NUL`.
 */
export const WARM_SCRIPT = [
  `exec ${AGENT_LISTEN_FD}>&-`,
  'p=$1; n=$2; shift 2',
  'while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done',
  `mapfile -d '' -t -u ${SPEC_FD} s || exit 125`,
  `exec ${SPEC_FD}<&-`,
  'k=${s[0]}',
  '[[ $k =~ ^[0-9]+$ ]] && [ "${#s[@]}" -ge $((k + 3)) ] || exit 125',
  `exec ${ENV} -i "\${s[@]:1:k}" /bin/sh -c "$p" onmemos-exec -- "\${s[@]:k+1}"`,
].join('\n');

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

export function warmStarter(newGroup: () => ExecGroup): WarmStarter {
  let parked: Parked | undefined;
  let disabled = !existsSync(BASH) || !existsSync(ENV);
  const discard = (p: Parked) => {
    if (parked === p) parked = undefined;
    for (const s of [p.child.stdin, p.child.stdout, p.child.stderr]) s?.destroy();
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
          String(group.procsFiles.length),
          ...group.procsFiles,
        ],
        { argv0: 'bash', detached: true, env: {}, cwd: '/', stdio: ['pipe', 'pipe', 'pipe', 'ignore', 'pipe'] },
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
      const items = [String(Object.keys(env).length), ...Object.entries(env).map(([k, v]) => `${k}=${v}`), cwd];
      const text = `${[...items, ...spec.argv].join('\0')}\0`;
      // bash reads a pipe a byte at a time (~0.3 µs each): beyond this, the ordinary start is the quicker one.
      if (text.length > MAX_SPEC_CHARS) return undefined;
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
