/**
 * A session's terminal at `/sessions/{id}/terminal`: xterm.js over the server's exec WebSocket
 * (v5.channel.k8s.io) with a tty, running the session's login shell (the argv its ConnectInfo gives).
 *
 * Frames are one channel byte then the payload: 0 stdin, 1 stdout, 2 stderr, 3 the exit status (a metav1.Status),
 * 4 the window size (`{"Width","Height"}`). The window size follows the browser window (the fit addon), text is
 * copied with Ctrl+Shift+C (or the selection menu) and pasted as the browser pastes. When the shell ends the page
 * says with what status; when the connection drops it says so and reconnects with a back-off, unless the session
 * is gone, which it says too. It never hangs on a dead socket: the server's close or the browser's ends it.
 */
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import { ApiError, api, el, header, signedIn } from './common.js';

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const STATUS = 3;
const RESIZE = 4;
const PROTOCOL = 'v5.channel.k8s.io';

interface ConnectInfo {
  status: string;
  shell: { argv: string[] } | null;
  exec: { url: string; protocol: string } | null;
}

/**
 * xterm styles under the page's Content-Security-Policy (src/server/web.ts), which blocks inline styles: it writes
 * its theme and cell sizes into <style> elements of its own, which get the page's nonce here (the one the page's
 * script tag was given), and sets truecolor and contrast colours on cells with setAttribute('style', …), which goes
 * through the CSSOM here instead (element.style, which a policy does not restrict). Only this page's own scripts
 * run on it.
 */
function stylesUnderCsp(): void {
  const nonce = document.querySelector<HTMLScriptElement>('script[nonce]')?.nonce;
  const create = Document.prototype.createElement;
  Document.prototype.createElement = function (this: Document, tag: string, options?: ElementCreationOptions) {
    const e = create.call(this, tag, options);
    if (nonce && tag.toLowerCase() === 'style') e.setAttribute('nonce', nonce);
    return e;
  } as typeof Document.prototype.createElement;
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (this: Element, name: string, value: string) {
    if (name.toLowerCase() === 'style' && this instanceof HTMLElement) this.style.cssText = value;
    else setAttribute.call(this, name, value);
  };
}

const root = el('main', { id: 'app', class: 'terminal-page' });
document.body.append(root);
const id = decodeURIComponent(location.pathname.split('/')[2] ?? '');

async function main(): Promise<void> {
  const me = await signedIn(root, id);
  const banner = el('div', { class: 'banner', id: 'banner', role: 'status', 'aria-live': 'polite' });
  const screen = el('div', { class: 'screen', id: 'terminal' });
  root.replaceChildren(header(id, me, [el('a', { href: '/' }, 'All sessions')]), banner, screen);
  document.title = `${id} · onmemos`;

  stylesUnderCsp();
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    fontSize: 14,
    scrollback: 5000,
    allowProposedApi: false,
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(screen);
  fit.fit();
  // The test hook and screen readers read the screen's text from here (no state of ours is on window otherwise).
  screen.dataset.ready = 'true';

  // Copy: Ctrl+Shift+C (Ctrl+C stays the shell's interrupt). Paste: the browser's own (Ctrl+Shift+V, Ctrl+V, menu).
  term.attachCustomKeyEventHandler((ev) => {
    if (ev.type === 'keydown' && ev.ctrlKey && ev.shiftKey && ev.code === 'KeyC') {
      const text = term.getSelection();
      if (text) navigator.clipboard?.writeText(text).catch(() => {});
      return false;
    }
    if (ev.type === 'keydown' && ev.ctrlKey && ev.code === 'KeyV') return false; // the browser pastes
    return true;
  });

  const enc = new TextEncoder();
  let ws: WebSocket | undefined;
  let attempt = 0;
  let ended = false;

  const say = (text: string, kind: 'info' | 'error' | 'ok' = 'info') => {
    banner.textContent = text;
    banner.className = `banner ${kind}`;
  };
  const send = (channel: number, payload: Uint8Array | string) => {
    if (ws?.readyState !== WebSocket.OPEN) return;
    const data = typeof payload === 'string' ? enc.encode(payload) : payload;
    const frame = new Uint8Array(data.length + 1);
    frame[0] = channel;
    frame.set(data, 1);
    ws.send(frame);
  };
  const sendSize = () => send(RESIZE, JSON.stringify({ Width: term.cols, Height: term.rows }));

  term.onData((d) => send(STDIN, d));
  term.onBinary((d) =>
    send(
      STDIN,
      Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff),
    ),
  );
  term.onResize(() => sendSize());
  new ResizeObserver(() => fit.fit()).observe(screen);
  window.addEventListener('resize', () => fit.fit());

  async function connect(): Promise<void> {
    let info: ConnectInfo;
    try {
      info = await api<ConnectInfo>('GET', `/v1/sessions/${encodeURIComponent(id)}/connect`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404)
        return gone('This session no longer exists (it was removed or it expired).');
      if (e instanceof ApiError && e.status === 401) return location.reload();
      return retry(`Cannot reach the session: ${(e as Error).message}.`);
    }
    if (info.status !== 'running' || !info.shell || !info.exec) {
      return gone(`This session is ${info.status}${info.shell ? '' : ' and has no interactive shell'}.`);
    }
    const q = new URLSearchParams();
    for (const a of info.shell.argv) q.append('command', a);
    q.set('tty', '1');
    q.set('stdin', '1');
    q.set('cols', String(term.cols));
    q.set('rows', String(term.rows));
    q.set('term', 'xterm-256color');
    const url = new URL(`${info.exec.url}?${q}`, location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    say(attempt ? 'Reconnecting…' : 'Connecting…');
    const socket = new WebSocket(url, [PROTOCOL]);
    socket.binaryType = 'arraybuffer';
    ws = socket;
    let opened = false;
    let status: string | undefined;
    socket.onopen = () => {
      opened = true;
      attempt = 0;
      say('Connected.', 'ok');
      setTimeout(() => {
        if (banner.textContent === 'Connected.') banner.className = 'banner hidden';
      }, 1500);
      sendSize();
      term.focus();
    };
    socket.onmessage = (ev) => {
      const data = new Uint8Array(ev.data as ArrayBuffer);
      if (data.length === 0) return;
      const channel = data[0];
      const payload = data.subarray(1);
      if (channel === STDOUT || channel === STDERR) term.write(payload);
      else if (channel === STATUS) status = new TextDecoder().decode(payload);
    };
    socket.onclose = () => {
      if (ws !== socket) return;
      ws = undefined;
      if (status !== undefined) return void shellEnded(status);
      if (!opened) return retry('The server refused the terminal (is the session running, and are you signed in?).');
      retry('The connection dropped.');
    };
  }

  async function shellEnded(status: string): Promise<void> {
    ended = true;
    // A session removed underneath ends its shell too: say that, rather than offer a new shell.
    try {
      await api('GET', `/v1/sessions/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404)
        return gone('This session no longer exists (it was removed or it expired).');
    }
    let code = 0;
    try {
      const s = JSON.parse(status) as {
        status?: string;
        details?: { causes?: { reason?: string; message?: string }[] };
      };
      if (s.status !== 'Success') code = Number(s.details?.causes?.find((c) => c.reason === 'ExitCode')?.message ?? 1);
    } catch {
      code = 1;
    }
    say(`The shell ended (exit ${code}). Press Enter to start a new one.`, code === 0 ? 'info' : 'error');
    term.write('\r\n');
    const once = term.onData((d) => {
      if (d !== '\r') return;
      once.dispose();
      ended = false;
      term.reset();
      void connect();
    });
  }

  function gone(message: string): void {
    ended = true;
    say(`${message} Back to all sessions: /`, 'error');
    term.options.disableStdin = true;
  }

  function retry(message: string): void {
    if (ended) return;
    attempt += 1;
    const wait = Math.min(30, 2 ** Math.min(attempt - 1, 5));
    say(`${message} Reconnecting in ${wait} s…`, 'error');
    setTimeout(() => void connect(), wait * 1000);
  }

  await connect();
}

main().catch((e) => {
  root.replaceChildren(el('p', { class: 'error' }, `The terminal failed: ${(e as Error).message}`));
});
