/**
 * The dashboard at `/`: every session this key may see, across providers, refreshed every 2 s; filters by
 * namespace, user and provider (the API's own list filters); a create form; remove with a confirmation; a link to
 * each session's terminal.
 */
import { ApiError, api, duration, el, header, type Me, type Session, signedIn } from './common.js';

const REFRESH_MS = 2000;
const root = el('main', { id: 'app' });
document.body.append(root);

interface State {
  me: Me;
  sessions: Session[];
  unreachable: string;
  error: string;
  updated?: Date;
  /** The session whose removal awaits a confirmation. */
  confirming?: string;
  busy: Set<string>;
}

async function main(): Promise<void> {
  const me = await signedIn(root, 'Sessions');
  const state: State = { me, sessions: [], unreachable: '', error: '', busy: new Set() };

  const filters = {
    namespace: el('input', { id: 'filter-namespace', placeholder: 'namespace', 'aria-label': 'namespace filter' }),
    user: el('input', { id: 'filter-user', placeholder: 'user', 'aria-label': 'user filter' }),
    provider: providerSelect('filter-provider', ['', 'local', 'cloud_run', 'gke', 'workstations'], 'any provider'),
  };
  const filterBar = el(
    'div',
    { class: 'filters', role: 'search' },
    el('span', { class: 'label' }, 'Filter'),
    filters.namespace,
    filters.user,
    filters.provider,
  );
  const status = el('p', { class: 'status', id: 'status', 'aria-live': 'polite' });
  const table = el('table', { id: 'sessions' });
  const createForm = await createSessionForm(me, () => refresh());
  root.replaceChildren(header('Sessions', me), el('section', {}, filterBar, table, status), createForm);

  let timer: ReturnType<typeof setTimeout> | undefined;
  let generation = 0;
  async function refresh(): Promise<void> {
    clearTimeout(timer);
    const mine = ++generation;
    const q = new URLSearchParams();
    for (const [k, input] of Object.entries(filters)) if (input.value.trim()) q.set(k, input.value.trim());
    try {
      const res = await fetch(`/v1/sessions?${q}`, { credentials: 'same-origin' });
      if (res.status === 401) return location.reload(); // signed out (a restarted server forgets sign-ins)
      const body = await res.json();
      if (!res.ok)
        throw new ApiError(res.status, body?.error?.code ?? 'error', body?.error?.message ?? `HTTP ${res.status}`);
      if (mine !== generation) return;
      state.sessions = body as Session[];
      state.unreachable = unreachableText(res.headers.get('x-onmemos-unreachable'));
      state.error = '';
      state.updated = new Date();
    } catch (e) {
      if (mine !== generation) return;
      state.error = e instanceof Error ? e.message : String(e);
    }
    render();
    timer = setTimeout(refresh, REFRESH_MS);
  }

  function render(): void {
    const now = Date.now();
    const head = el(
      'tr',
      {},
      ...['ID', 'Provider', 'Namespace', 'User', 'Status', 'Age', 'Expires', ''].map((h) =>
        el('th', { scope: 'col' }, h),
      ),
    );
    const rows = state.sessions.map((s) => {
      const actions = el('td', { class: 'actions' });
      if (state.confirming === s.id) {
        const yes = el('button', { type: 'button', class: 'danger', 'data-confirm': s.id }, 'Remove');
        const no = el('button', { type: 'button', 'data-cancel': s.id }, 'Keep');
        yes.addEventListener('click', () => remove(s.id));
        no.addEventListener('click', () => {
          state.confirming = undefined;
          render();
        });
        actions.append(el('span', { class: 'confirm' }, `Remove ${s.id}?`), yes, no);
      } else {
        const open = el(
          'a',
          { href: `/sessions/${encodeURIComponent(s.id)}/terminal`, class: 'button', 'data-terminal': s.id },
          'Terminal',
        );
        const rm = el('button', { type: 'button', 'data-remove': s.id }, state.busy.has(s.id) ? 'Removing…' : 'Remove');
        if (state.busy.has(s.id)) rm.setAttribute('disabled', '');
        rm.addEventListener('click', () => {
          state.confirming = s.id;
          render();
        });
        if (s.status === 'running') actions.append(open);
        actions.append(rm);
      }
      return el(
        'tr',
        { 'data-id': s.id },
        el('td', { class: 'id' }, s.id),
        el('td', {}, s.provider),
        el('td', {}, s.namespace),
        el('td', {}, s.user),
        el('td', {}, el('span', { class: `badge ${s.status}` }, s.status)),
        el('td', { title: s.created_at }, duration(now - Date.parse(s.created_at))),
        el(
          'td',
          { title: s.expires_at },
          Date.parse(s.expires_at) > now ? `in ${duration(Date.parse(s.expires_at) - now)}` : 'now',
        ),
        actions,
      );
    });
    const body = rows.length
      ? rows
      : [
          el(
            'tr',
            {},
            el('td', { colspan: '8', class: 'empty' }, 'No sessions. Create one below, or with onmemos create.'),
          ),
        ];
    table.replaceChildren(el('thead', {}, head), el('tbody', {}, ...body));
    const parts = [];
    if (state.updated)
      parts.push(
        `${state.sessions.length} session${state.sessions.length === 1 ? '' : 's'}, updated ${state.updated.toLocaleTimeString()}`,
      );
    if (state.unreachable) parts.push(state.unreachable);
    status.textContent = parts.join(' · ');
    status.classList.toggle('error', Boolean(state.error));
    if (state.error) status.textContent = `Could not refresh: ${state.error}`;
  }

  async function remove(id: string): Promise<void> {
    state.confirming = undefined;
    state.busy.add(id);
    render();
    try {
      await api('DELETE', `/v1/sessions/${encodeURIComponent(id)}`);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) state.error = `remove ${id}: ${(e as Error).message}`;
    }
    state.busy.delete(id);
    await refresh();
  }

  for (const input of Object.values(filters)) input.addEventListener('input', () => refresh());
  await refresh();
}

function unreachableText(header: string | null): string {
  if (!header) return '';
  try {
    const list = JSON.parse(decodeURIComponent(header)) as { provider: string; message: string }[];
    return list.map((u) => `${u.provider} not listed: ${u.message}`).join('; ');
  } catch {
    return '';
  }
}

function providerSelect(id: string, kinds: string[], emptyLabel: string): HTMLSelectElement {
  const select = el('select', { id, 'aria-label': 'provider' });
  for (const k of kinds) select.append(el('option', { value: k }, k || emptyLabel));
  return select;
}

/** The create form: provider (those the server has), template, namespace, user, TTL. */
async function createSessionForm(me: Me, created: () => void): Promise<HTMLElement> {
  const health = await api<{ providers: string[] }>('GET', '/health').catch(() => ({ providers: ['local'] }));
  const provider = providerSelect('create-provider', ['auto', ...health.providers], 'auto');
  const template = el('select', { id: 'create-template', 'aria-label': 'template' });
  for (const t of ['python', 'nodejs', 'go']) template.append(el('option', { value: t }, t));
  const namespace = el('input', {
    id: 'create-namespace',
    value: me.namespaces?.[0] ?? 'default',
    required: '',
    'aria-label': 'namespace',
  });
  const user = el('input', { id: 'create-user', value: 'user', required: '', 'aria-label': 'user' });
  const ttl = el('input', {
    id: 'create-ttl',
    type: 'number',
    min: '1',
    max: '1440',
    value: '60',
    required: '',
    'aria-label': 'TTL in minutes',
  });
  const submit = el('button', { type: 'submit' }, 'Create');
  const message = el('p', { class: 'status', id: 'create-status', 'aria-live': 'polite' });
  const field = (label: string, input: HTMLElement) => el('label', {}, el('span', {}, label), input);
  const form = el(
    'form',
    { class: 'create', id: 'create' },
    el('h2', {}, 'New session'),
    el(
      'div',
      { class: 'fields' },
      field('Provider', provider),
      field('Template', template),
      field('Namespace', namespace),
      field('User', user),
      field('TTL (minutes)', ttl),
      submit,
    ),
    message,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.setAttribute('disabled', '');
    message.classList.remove('error');
    message.textContent = 'Creating…';
    try {
      const s = await api<Session>('POST', '/v1/sessions', {
        provider: provider.value,
        template: template.value,
        namespace: namespace.value.trim(),
        user: user.value.trim(),
        ttl_minutes: Number(ttl.value),
      });
      message.textContent = `Created ${s.id} on ${s.provider}.`;
      created();
    } catch (e) {
      message.classList.add('error');
      message.textContent = `Not created: ${(e as Error).message}`;
    } finally {
      submit.removeAttribute('disabled');
    }
  });
  return form;
}

main().catch((e) => {
  root.replaceChildren(el('p', { class: 'error' }, `The dashboard failed: ${(e as Error).message}`));
});
