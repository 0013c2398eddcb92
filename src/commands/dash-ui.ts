/**
 * The screen of `onmemos dash`: an ink app (React without JSX: `h` is createElement) over a list function and a
 * remove function it is given. It knows nothing of providers or of the terminal's modes; dash.ts owns those.
 * ink and react are ES-module/external packages loaded by `loadInk()` only, so no other command pays for them.
 */
import type * as InkModule from 'ink';
import type * as ReactModule from 'react';
import type { Session } from '../session/model.js';
import { sessionsTable } from './format.js';

export interface InkDeps {
  ink: typeof InkModule;
  React: typeof ReactModule;
}

export async function loadInk(): Promise<InkDeps> {
  const [ink, react] = await Promise.all([import('ink'), import('react')]);
  // react is CommonJS: its import() namespace has the module as `default`.
  const React = ((react as { default?: typeof ReactModule }).default ?? react) as typeof ReactModule;
  return { ink, React };
}

/** What survives leaving the screen for a shell and coming back. */
export interface DashView {
  filter: string;
  selectedId?: string;
  sessions?: Session[];
  warnings?: string[];
  message?: string;
}

export type DashExit = { kind: 'quit' } | { kind: 'shell'; id: string; view: DashView };

export interface DashScreenOptions {
  list: () => Promise<{ sessions: Session[]; unreachable: { provider: string; message: string }[] }>;
  /** Removes one session; resolves with the line to show. */
  remove: (id: string) => Promise<string>;
  intervalMs: number;
  /** `local mode` or `remote mode (URL)`. */
  mode: string;
  now: () => number;
  view: DashView;
}

/** The sessions whose id, namespace, user, provider or status contains the filter (case-insensitive). */
export function filterSessions(sessions: Session[], filter: string): Session[] {
  const f = filter.toLowerCase();
  if (!f) return sessions;
  return sessions.filter((s) =>
    [s.id, s.namespace, s.user, s.provider, s.status].some((v) => v.toLowerCase().includes(f)),
  );
}

/** The screen itself; ink and React come in as props (they are loaded at run time, see loadInk). */
function Dash({ deps, opts }: { deps: InkDeps; opts: DashScreenOptions }): ReactModule.ReactElement {
  const { ink, React } = deps;
  const h = React.createElement;
  const { Box, Text } = ink;
  const { exit } = ink.useApp();
  const { stdout } = ink.useStdout();
  const [sessions, setSessions] = React.useState<Session[] | undefined>(opts.view.sessions);
  const [warnings, setWarnings] = React.useState<string[]>(opts.view.warnings ?? []);
  const [filter, setFilter] = React.useState(opts.view.filter);
  const [filtering, setFiltering] = React.useState(false);
  const [selectedId, setSelectedId] = React.useState(opts.view.selectedId);
  const [confirm, setConfirm] = React.useState<string | undefined>();
  const [message, setMessage] = React.useState(opts.view.message);
  const [busy, setBusy] = React.useState(false);
  const [reload, setReload] = React.useState(0);
  const [, setSize] = React.useState(0);

  // The list, now and then every interval; only the very first failure is fatal (as `ls` would fail).
  React.useEffect(() => {
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    let first = opts.view.sessions === undefined && reload === 0;
    const tick = async () => {
      try {
        const r = await opts.list();
        if (stopped) return;
        setSessions(r.sessions);
        setWarnings(r.unreachable.map((u) => `warning: ${u.provider} not listed: ${u.message}`));
      } catch (e) {
        if (stopped) return;
        if (first) {
          exit(e instanceof Error ? e : new Error(String(e)));
          return;
        }
        setWarnings([`warning: refresh failed: ${e instanceof Error ? e.message : String(e)}`]);
      }
      first = false;
      if (!stopped) timer = setTimeout(tick, opts.intervalMs);
    };
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [reload, exit]);

  React.useEffect(() => {
    const onResize = () => setSize((n) => n + 1);
    stdout.on('resize', onResize);
    return () => {
      stdout.off('resize', onResize);
    };
  }, [stdout]);

  const visible = filterSessions(sessions ?? [], filter);
  const found = visible.findIndex((s) => s.id === selectedId);
  const index = Math.max(found, 0);
  const selected = visible[index];
  const move = (by: number) => {
    const next = visible[Math.min(Math.max(index + by, 0), visible.length - 1)];
    if (next) setSelectedId(next.id);
  };
  const view = (): DashView => ({ filter, selectedId: selected?.id, sessions, warnings, message });

  ink.useInput((input, key) => {
    if (key.ctrl && input === 'c') return exit({ kind: 'quit' });
    if (confirm) {
      const id = confirm;
      setConfirm(undefined);
      if (input !== 'y' && input !== 'Y') return setMessage(`kept ${id}`);
      setBusy(true);
      setMessage(`removing ${id}…`);
      opts
        .remove(id)
        .then(
          (line) => setMessage(line),
          (e: unknown) => setMessage(`cannot remove ${id}: ${e instanceof Error ? e.message : String(e)}`),
        )
        .finally(() => {
          setBusy(false);
          setReload((n) => n + 1);
        });
      return;
    }
    if (key.upArrow) return move(-1);
    if (key.downArrow) return move(1);
    if (filtering) {
      if (key.escape) {
        setFilter('');
        setFiltering(false);
      } else if (key.return) setFiltering(false);
      else if (key.backspace || key.delete) setFilter((f) => f.slice(0, -1));
      else if (input && !key.ctrl && !key.meta && !/[\x00-\x1f\x7f]/.test(input)) setFilter((f) => f + input);
      return;
    }
    if (input === 'q') return exit({ kind: 'quit' });
    if (input === 'k') return move(-1);
    if (input === 'j') return move(1);
    if (input === '/') return setFiltering(true);
    if (key.escape) return setFilter('');
    if (input === 'r') return setReload((n) => n + 1);
    if (busy || !selected) return;
    if (key.return) return exit({ kind: 'shell', id: selected.id, view: view() });
    if (input === 'd') {
      setMessage(undefined);
      setConfirm(selected.id);
    }
  });

  const total = sessions?.length ?? 0;
  const count =
    sessions === undefined
      ? 'loading…'
      : filter
        ? `${visible.length} of ${total} sessions match /${filter}`
        : `${total} session${total === 1 ? '' : 's'}`;
  const lines = sessionsTable(visible, opts.now()).split('\n');
  // Header, title, filter, warnings, message and footer take about eight lines; the rows get the rest.
  const room = Math.max(3, (stdout.rows ?? 24) - 8 - warnings.length);
  const start = Math.min(Math.max(0, index - room + 1), Math.max(0, visible.length - room));
  const rows = visible.slice(start, start + room).map((s, i) => {
    const on = start + i === index;
    return h(Text, { key: s.id, inverse: on, wrap: 'truncate' }, `${on ? '›' : ' '} ${lines[start + i + 1]}`);
  });

  const footer = confirm
    ? h(Text, { color: 'yellow', bold: true }, `remove ${confirm}? y/N`)
    : filtering
      ? h(Text, { dimColor: true }, 'type to filter · Enter keep · Esc clear · ↑/↓ move')
      : h(Text, { dimColor: true }, '↑/↓ j/k move · / filter · Enter shell · d remove · r refresh · q quit');

  return h(
    Box,
    { flexDirection: 'column' },
    h(Text, { bold: true }, `onmemos dash · ${opts.mode} · ${count} · every ${opts.intervalMs / 1000}s`),
    filtering || filter ? h(Text, { color: 'cyan' }, `/${filter}${filtering ? '▏' : ''}`) : null,
    h(Text, { bold: true, wrap: 'truncate' }, `  ${lines[0]}`),
    ...rows,
    sessions !== undefined && visible.length === 0
      ? h(Text, { dimColor: true }, filter ? '  no session matches' : '  no sessions (onmemos create makes one)')
      : null,
    ...warnings.map((w, i) => h(Text, { key: `w${i}`, color: 'yellow', wrap: 'truncate' }, w)),
    message ? h(Text, { wrap: 'truncate' }, message) : null,
    footer,
  );
}

/** Mounts the screen; resolves when it is left (quit, or a shell to open), rejects if the first list fails. */
export function renderDash(
  deps: InkDeps,
  io: { stdin: NodeJS.ReadStream; stdout: NodeJS.WriteStream; stderr: NodeJS.WriteStream },
  opts: DashScreenOptions,
): { done: Promise<DashExit | undefined>; unmount: () => void } {
  const instance = deps.ink.render(deps.React.createElement(Dash, { deps, opts }), {
    stdin: io.stdin,
    stdout: io.stdout,
    stderr: io.stderr,
    exitOnCtrlC: false,
    patchConsole: false,
  });
  return {
    done: instance.waitUntilExit() as Promise<DashExit | undefined>,
    unmount: () => instance.unmount(),
  };
}
