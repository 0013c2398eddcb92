/** The onmemos package: the SDK (OnMemOSClient), the typed errors, the session model and the providers. */

export { main, runCli } from './cli.js';
export * from './errors.js';
/** For bench/ only; no stability promised. */
export * as internals from './internals.js';
export { type ProviderEntry, type ProviderRegistry, tableRegistry } from './providers/index.js';
export { LocalProvider } from './providers/local/local.js';
export type {
  BackgroundWhileIdle,
  Capabilities,
  CreateOptions,
  ExecSpec,
  ExitStatus,
  Provider,
  RemoteProcess,
} from './providers/provider.js';
export { RemoteProvider } from './providers/remote.js';
export {
  type ClientProcess,
  ClientSession,
  type ConnectInfo,
  type ExecOptions,
  OnMemOSClient,
  type SessionRequest,
} from './sdk/client.js';
export * from './session/model.js';
