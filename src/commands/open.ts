import { Command } from 'commander';
import { UnsupportedError } from '../errors.js';
import { validateSessionId } from '../session/model.js';
import { type Ctx, locate, out } from './context.js';

/**
 * The session's web terminal (served by `onmemos serve`, so a client of a server has one): its URL on stdout, and a
 * browser opened on it where this machine has one and a person is at the terminal.
 */
export function openCommand(ctx: () => Ctx): Command {
  return new Command('open')
    .description("print a session's web terminal URL and open it in a browser (remote mode: onmemos serve serves it)")
    .argument('<id>', 'session id')
    .option('--no-browser', 'only print the URL')
    .addHelpText(
      'after',
      `
The URL is the page of onmemos serve's web UI with the session's terminal; the browser signs in there once with an
API key. A browser is opened only when stdout is a terminal and this machine has a graphical session (xdg-open with
DISPLAY or WAYLAND_DISPLAY, or macOS open); otherwise the URL is printed alone.

Exit status: 0 with the URL printed; 2 (unsupported) where no server serves a web terminal (local mode).

Examples:
  onmemos open "$id"
  ONMEMOS_SERVER=http://127.0.0.1:8080 onmemos open "$id" --no-browser`,
    )
    .action(async (id: string, o: { browser: boolean }) => {
      const c = ctx();
      const { session } = await locate(c, validateSessionId(id));
      if (!session.web_terminal) {
        throw new UnsupportedError(`session ${session.id} has no web terminal here: onmemos serve serves the web UI`, {
          hint: 'run onmemos serve, then use it: ONMEMOS_SERVER=http://127.0.0.1:8080 ONMEMOS_API_KEY=… onmemos open ID',
        });
      }
      out(c, session.web_terminal);
      if (o.browser && c.stdout.isTTY) await openBrowser(c.env, session.web_terminal);
    });
}

/** Starts the desktop's browser on `url`, detached, where there is one; says nothing when there is none. */
async function openBrowser(env: NodeJS.ProcessEnv, url: string): Promise<void> {
  const { spawn } = await import('node:child_process');
  const { existsSync } = await import('node:fs');
  let argv: string[] | undefined;
  if (process.platform === 'darwin') argv = ['/usr/bin/open', url];
  else if ((env.DISPLAY || env.WAYLAND_DISPLAY) && existsSync('/usr/bin/xdg-open')) argv = ['/usr/bin/xdg-open', url];
  if (!argv) return;
  const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: 'ignore' });
  child.on('error', () => {});
  child.unref();
}
