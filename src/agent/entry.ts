/** dist/agent.cjs: the agent inside a local session (see main.ts). Exits 125 with one line on a setup failure. */
import { main } from './main.js';

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`onmemos agent: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(125);
});
