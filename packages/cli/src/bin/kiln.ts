#!/usr/bin/env node
import { main } from '../main';

// Commands report their own errors (`kiln <command>: <message>`); what reaches here is a bug, so keep
// its stack.
main().catch((error: unknown) => {
  process.stderr.write(`kiln: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
