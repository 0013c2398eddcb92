/**
 * Commands in a pod, over the Kubernetes exec API. That API runs argv as given, with the container's environment
 * and working directory, and ends nothing when the client goes away (without a tty the process keeps running): so
 * every command starts through the pid-recording wrapper of src/exec/wrapper.ts, and a signal goes to the command's
 * whole tree through a second exec.
 */
import { CONTAINER } from './pod.js';

export { pidFile, signalArgv, wrappedArgv } from '../../exec/wrapper.js';

/** The exec query as the Kubernetes API takes it (kubectl's own: `command` once per argv element). */
export function podExecQuery(argv: string[], o: { stdin: boolean; tty: boolean }): URLSearchParams {
  const q = new URLSearchParams();
  for (const a of argv) q.append('command', a);
  q.set('container', CONTAINER);
  if (o.stdin) q.set('stdin', 'true');
  q.set('stdout', 'true');
  if (!o.tty) q.set('stderr', 'true');
  if (o.tty) q.set('tty', 'true');
  return q;
}
