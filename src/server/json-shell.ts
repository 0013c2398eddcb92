/**
 * The document's JSON shell WebSocket, on `/v1/sessions/{id}/shell` and `/v1/cloudrun/workspaces/{id}/shell` (and
 * on the Cloud Run agent's `/v1/shell`, src/agent/cloud.ts):
 * `{"type":"command","command":"..."}` is run under `/bin/sh -c` and answered with
 * `{"type":"command_result","stdout","stderr","returncode","success"}`, one command at a time, in order. A bad
 * message is answered with `{"type":"error","error":{"code","message"}}`.
 */
import type { WebSocket } from 'ws';
import { validateArgument } from '../session/model.js';
import { acceptCounted, type ServerOptions, type Upgrade } from './context.js';
import { checkTimeout, runBuffered, type StartProcess } from './execute.js';
import { errorStatus } from './http.js';

/** JSON shell commands that may wait behind the running one; more are answered too_many_requests. */
const SHELL_MAX_WAITING = 8;

/** The upgrade of a JSON shell route (checked up to a running session by the server): one concurrency slot. */
export async function shellRoute(u: Upgrade): Promise<void> {
  const accepted = await acceptCounted(u.ctx, u.principal, u.req, u.socket, u.head);
  if (!accepted) return;
  const start: StartProcess = (spec) => u.provider.exec(u.session.id, spec);
  jsonShell(accepted.ws, { start, outputCap: u.ctx.opts.outputCap }, accepted.release);
}

type ShellReply = Record<string, unknown> & { type: string };
/** A JSON shell message, checked as it arrives: a command to run, or the reply a bad message gets. */
type ShellJob = { command: string; timeout: number } | { reply: ShellReply };

/**
 * Checks a message at once, so that what waits is a command of at most 128 KiB (validateArgument), never the
 * message of up to 1 MiB it came in.
 */
function shellJob(data: Buffer): ShellJob {
  let msg: { type?: unknown; command?: unknown; timeout?: unknown };
  try {
    msg = JSON.parse(data.toString('utf8'));
  } catch {
    return { reply: { type: 'error', error: { code: 'bad_request', message: 'messages must be JSON' } } };
  }
  if (msg?.type !== 'command' || typeof msg.command !== 'string' || msg.command === '') {
    const message = 'expected {"type":"command","command":"..."}';
    return { reply: { type: 'error', error: { code: 'bad_request', message } } };
  }
  try {
    return { command: validateArgument('the command', msg.command), timeout: checkTimeout(msg.timeout ?? 120) };
  } catch (e) {
    const { code, message } = errorStatus(e);
    return { reply: { type: 'error', error: { code, message } } };
  }
}
const REFUSED: ShellReply = {
  type: 'error',
  error: {
    code: 'too_many_requests',
    message: `more than ${SHELL_MAX_WAITING} commands are waiting on this shell: this one was not run`,
  },
};

/**
 * Serves the JSON shell protocol on an open WebSocket, each command started with `opts.start` (a session of the
 * server's providers, or the Cloud Run agent's own children); `release` gives back its concurrency slot once it is
 * over.
 *
 * Bounded: at most SHELL_MAX_WAITING commands (each at most 128 KiB) wait behind the running one. A message past
 * that is not kept: it is answered too_many_requests in its turn (replies stay one per message, in order, which
 * is all this protocol has to match them), and only a count is kept until then. This rather than pausing the
 * socket: reading never pauses, so a client that goes away is seen at once and its command killed. The next reply
 * is sent only once the last has gone out, so a client that does not read its replies holds up its own shell, not
 * the server's memory.
 */
export function jsonShell(
  ws: WebSocket,
  opts: { start: StartProcess; outputCap?: ServerOptions['outputCap'] },
  release: () => void,
): void {
  const closed = new AbortController();
  const waiting: { job: ShellJob; refusedAfter: number }[] = [];
  let busy = false;
  // The slot is given back once the connection is closed and its last command has ended (killed on close).
  const onClose = () => {
    closed.abort();
    waiting.length = 0;
    if (!busy) release();
  };
  if (ws.readyState !== ws.OPEN) {
    onClose();
    return;
  }
  ws.once('close', onClose);
  const reply = (body: ShellReply) =>
    new Promise<void>((resolve) => {
      if (ws.readyState !== ws.OPEN) return resolve();
      ws.send(JSON.stringify(body), () => resolve());
    });
  const answer = async (job: ShellJob): Promise<ShellReply> => {
    if ('reply' in job) return job.reply;
    try {
      const result = await runBuffered(opts.start, job.command, job.timeout, opts.outputCap, closed.signal);
      return { type: 'command_result', ...result };
    } catch (e) {
      const { code, message } = errorStatus(e);
      return { type: 'error', error: { code, message } };
    }
  };
  const work = async () => {
    busy = true;
    while (waiting.length > 0 && !closed.signal.aborted) {
      const next = waiting.shift()!;
      await reply(await answer(next.job));
      for (let i = 0; i < next.refusedAfter && !closed.signal.aborted; i++) await reply(REFUSED);
    }
    busy = false;
    if (closed.signal.aborted) release();
  };
  ws.on('message', (data: Buffer) => {
    if (waiting.length >= SHELL_MAX_WAITING) {
      waiting[waiting.length - 1]!.refusedAfter++;
      return;
    }
    waiting.push({ job: shellJob(data), refusedAfter: 0 });
    if (!busy) void work();
  });
}
