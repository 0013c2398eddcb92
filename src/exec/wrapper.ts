// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these are sh scripts, where ${x} is sh's own
/**
 * Commands on a remote machine that ends nothing when its client goes away (a pod's exec API; sshd without a tty):
 * every command starts through a fixed sh wrapper that records its pid in a file under /tmp, applies the exec's
 * environment (values arrive as positional parameters, never as shell text), changes directory and checks argv[0]
 * as every onmemos transport does; and a signal (Ctrl-C, --timeout, a client that went away) is sent to the
 * command and everything it started by a second command that reads that file. Used by gke and workstations.
 */
import { randomSuffix } from '../session/model.js';
import { CHANGE_DIRECTORY_AND_EXEC } from './lookup.js';
import type { ExecSpec } from './process.js';

/**
 * `$1` the pid file, `$2` the tty's size as "ROWS COLS" (or empty), `$3` how many environment assignments follow,
 * those, the directory, then argv. The size is set on the tty before the command starts: the client's first resize
 * travels apart from the command's start (a pod exec's resize channel) and may reach the tty after it.
 */
export const EXEC_WRAPPER = [
  'echo $$ > "$1" 2>/dev/null; shift',
  'if [ -n "$1" ]; then stty rows "${1% *}" cols "${1#* }" 2>/dev/null; fi; shift',
  'n=$1; shift',
  'while [ "$n" -gt 0 ]; do export "$1"; shift; n=$((n - 1)); done',
  CHANGE_DIRECTORY_AND_EXEC,
].join('\n');

/**
 * The wrapper for a transport that reports a signal as its own failure (ssh exits 255 when the remote command is
 * killed by one): the shell stays, runs the command as its child, and exits with what sh reports, 128+N for
 * signal N. The recorded pid is the shell's, so a signal still reaches the command's whole tree.
 */
export const RUN_WRAPPER = EXEC_WRAPPER.replace(/exec "\$@"$/, '"$@"; exit $?');

/**
 * `$1` the pid file, `$2` the signal: signals the recorded process and its descendants (found through each
 * process's parent in /proc/N/stat: no tool beyond sh is assumed in the image). Twice for KILL, so that what
 * forked while the first pass ran goes too.
 */
export const SIGNAL_SCRIPT = [
  'f=$1; sig=$2; root=$(cat "$f" 2>/dev/null) || exit 0',
  'tree() {',
  '  all=""',
  '  for d in /proc/[0-9]*; do',
  '    read -r l < "$d/stat" 2>/dev/null || continue',
  '    set -- ${l##*) }',
  '    all="$all ${d#/proc/}:$2"',
  '  done',
  '  pids=$root; front=$root; depth=0',
  '  while [ -n "$front" ] && [ $depth -lt 64 ]; do',
  '    next=""',
  '    for e in $all; do for p in $front; do [ "${e#*:}" = "$p" ] && next="$next ${e%%:*}"; done; done',
  '    pids="$pids $next"; front=$next; depth=$((depth + 1))',
  '  done',
  '}',
  'tree; kill -s "$sig" $pids 2>/dev/null',
  'if [ "$sig" = KILL ]; then tree; kill -s KILL $pids 2>/dev/null; rm -f "$f"; fi',
  'exit 0',
].join('\n');

/** A fresh pid file path for one exec. */
export function pidFile(): string {
  return `/tmp/.onmemos-exec-${Date.now().toString(36)}-${randomSuffix(8)}`;
}

/** The argv that runs `spec` through the wrapper. TERM travels with the environment for a tty. */
export function wrappedArgv(
  spec: ExecSpec,
  pid: string,
  base: Record<string, string> = {},
  wrapper: string = EXEC_WRAPPER,
): string[] {
  const env = { ...base, ...(spec.tty && spec.term ? { TERM: spec.term } : {}), ...(spec.env ?? {}) };
  const assignments = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return [
    '/bin/sh',
    '-c',
    wrapper,
    'onmemos-exec',
    pid,
    spec.tty && spec.cols && spec.rows ? `${spec.rows} ${spec.cols}` : '',
    String(assignments.length),
    ...assignments,
    spec.cwd ?? '/workspace',
    ...spec.argv,
  ];
}

export function signalArgv(pid: string, signal: NodeJS.Signals): string[] {
  return ['/bin/sh', '-c', SIGNAL_SCRIPT, 'onmemos-signal', pid, signal.replace(/^SIG/, '')];
}
