/** The onmemos package: the SDK surface. */

export { main, runCli } from './cli.js';
export * from './errors.js';
export { LocalProvider } from './providers/local/local.js';
export type { Capabilities, ExecSpec, ExitStatus, Provider, RemoteProcess } from './providers/provider.js';
export * from './session/model.js';
