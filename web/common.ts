/**
 * What the dashboard and the terminal page share: the /v1 API through fetch (signed in by the HttpOnly cookie the
 * server sets at /ui/login; the key itself is sent once, in a JSON body, and kept nowhere), the sign-in form, and
 * small DOM helpers. No inline scripts or styles anywhere: the pages run under a strict Content-Security-Policy.
 */

export interface Session {
  id: string;
  provider: string;
  namespace: string;
  user: string;
  status: string;
  template: string;
  created_at: string;
  expires_at: string;
  web_terminal?: string;
}

export interface Me {
  auth_required: boolean;
  signed_in: boolean;
  namespaces: string[] | null;
}

/** An API error: the server's `{"error": {"code", "message"}}` and the HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** One API call, JSON in and out, same-origin with the sign-in cookie. */
export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'unavailable', 'cannot reach the onmemos server');
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const err = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
    throw new ApiError(res.status, err?.code ?? 'error', err?.message ?? `HTTP ${res.status}`);
  }
  return json as T;
}

/** An element with attributes and children; text is set as text, never as HTML. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

/** The page's header: the name, what the page is, and sign-out where signing in is needed. */
export function header(title: string, me: Me | undefined, links: Node[] = []): HTMLElement {
  const right = el('nav', { class: 'nav' }, ...links);
  if (me?.auth_required && me.signed_in) {
    const out = el('button', { type: 'button', class: 'link', id: 'sign-out' }, 'Sign out');
    out.addEventListener('click', async () => {
      await api('POST', '/ui/logout').catch(() => {});
      location.reload();
    });
    right.append(out);
  }
  return el(
    'header',
    { class: 'top' },
    el('a', { href: '/', class: 'brand' }, 'onmemos'),
    el('span', { class: 'title' }, title),
    right,
  );
}

/**
 * Resolves once the browser is signed in: at once when it already is (or the server needs no key), else after the
 * sign-in form below succeeds.
 */
export async function signedIn(root: HTMLElement, title: string): Promise<Me> {
  const me = await api<Me>('GET', '/ui/me');
  if (!me.auth_required || me.signed_in) return me;
  return new Promise((resolve) => {
    const key = el('input', {
      type: 'password',
      id: 'api-key',
      name: 'key',
      autocomplete: 'current-password',
      placeholder: 'API key',
      required: '',
    });
    const error = el('p', { class: 'error', id: 'sign-in-error', role: 'alert' });
    const form = el(
      'form',
      { class: 'sign-in', id: 'sign-in' },
      el('h1', {}, 'Sign in'),
      el(
        'p',
        {},
        'Sign in with an API key of this server. It is checked once; this browser then stays signed in until it closes.',
      ),
      el('label', { for: 'api-key' }, 'API key'),
      key,
      el('button', { type: 'submit' }, 'Sign in'),
      error,
    );
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      error.textContent = '';
      try {
        const r = await api<{ namespaces: string[] | null }>('POST', '/ui/login', { key: key.value });
        key.value = '';
        form.remove();
        resolve({ auth_required: true, signed_in: true, namespaces: r.namespaces });
      } catch (e) {
        error.textContent =
          e instanceof ApiError && e.status === 401 ? 'That key is not valid here.' : String((e as Error).message);
      }
    });
    root.replaceChildren(header(title, undefined), form);
    key.focus();
  });
}

/** "3m", "2h 5m", "4d": how long ago or ahead, for ages and expiries. */
export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
  return `${Math.floor(h / 24)}d`;
}
