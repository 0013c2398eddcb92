/**
 * Which providers this process can reach. Heavy clients are imported lazily, only when a provider is used.
 * Cloud providers arrive with later work; until then `auto` resolves to the local sandbox and says so.
 */
import { NotFoundError, UnavailableError } from '../errors.js';
import { type CreateSessionRequest, chooseProvider, type Session } from '../session/model.js';
import type { Provider } from './provider.js';

export interface ProviderRegistry {
  /** The provider that makes a session for this request, and why it was chosen. */
  forCreate(req: CreateSessionRequest): Promise<{ provider: Provider; reason: string }>;
  /** Every configured provider (for ls, and to find a session by id). */
  all(): Promise<Provider[]>;
}

export function defaultRegistry(env: NodeJS.ProcessEnv = process.env): ProviderRegistry {
  let local: Provider | undefined;
  const getLocal = async () => {
    if (!local) {
      const { LocalProvider } = await import('./local/local.js');
      local = new LocalProvider({ env });
    }
    return local;
  };
  return {
    async forCreate(req) {
      if (req.provider === 'local') return { provider: await getLocal(), reason: 'requested' };
      if (req.provider === 'auto') {
        // The document's rule, over the providers configured here; where its pick is not, the local sandbox stands in.
        const pick = chooseProvider(req);
        return {
          provider: await getLocal(),
          reason: `auto picks ${pick.provider} (${pick.reason}), which is not configured: the local sandbox stands in`,
        };
      }
      throw new UnavailableError(`provider ${req.provider} is not configured in this build of onmemos`, {
        hint: 'use --provider local or --provider auto',
      });
    },
    async all() {
      return [await getLocal()];
    },
  };
}

/** Every command against one onmemos server (remote mode). */
export function remoteRegistry(opts: { server: string; apiKey?: string }): ProviderRegistry {
  let remote: Provider | undefined;
  const get = async () => {
    if (!remote) {
      const { RemoteProvider } = await import('./remote.js');
      remote = new RemoteProvider(opts);
    }
    return remote;
  };
  return {
    forCreate: async () => ({ provider: await get(), reason: `the server at ${opts.server} chooses` }),
    all: async () => [await get()],
  };
}

/** Finds the provider that holds a session id (NotFoundError when none does). */
export async function findSession(
  registry: ProviderRegistry,
  id: string,
): Promise<{ provider: Provider; session: Session }> {
  let notFound: unknown;
  for (const provider of await registry.all()) {
    try {
      return { provider, session: await provider.get(id) };
    } catch (e) {
      if (e instanceof NotFoundError) notFound = e;
      else throw e;
    }
  }
  throw notFound ?? new NotFoundError(`no such session: ${id}`);
}
