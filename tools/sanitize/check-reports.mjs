// Reads the sanitizer logs of tools/sanitize/run.sh (one file per process) and fails on what is Kiln's:
// any ASan error other than a leak, any UBSan or TSan report, and any leak whose allocation stack has a
// frame in kiln.node. Node's and V8's own leaks at exit are counted, not failed.
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

const dir = process.argv[2];
let failures = 0;
let foreignLeaks = 0;
for (const file of readdirSync(dir)) {
  const text = readFileSync(path.join(dir, file), 'utf8');
  if (file.startsWith('ubsan') || file.startsWith('tsan')) {
    if (text.trim()) {
      failures++;
      process.stdout.write(`${file}:\n${text}\n`);
    }
    continue;
  }
  // ASan: a report is either one error (ERROR: AddressSanitizer: <kind>) or LeakSanitizer's list.
  for (const error of text.split(/^=+\n/m)) {
    if (/ERROR: AddressSanitizer:/.test(error)) {
      failures++;
      process.stdout.write(`${file}:\n${error}\n`);
    }
  }
  for (const leak of text.split(/\n(?=(?:Direct|Indirect) leak of )/)) {
    if (!/^(Direct|Indirect) leak of /.test(leak)) continue;
    // Handles of JavaScript objects still alive when the process exits (an engine a script never
    // disposed: its napi_create_external / napi_wrap) are freed by the garbage collector, which Node
    // does not run at exit; they are not leaks of Kiln's. Anything else through kiln.node is.
    const aliveAtExit = /#1 0x[0-9a-f]+ in (napi_create_external|napi_wrap|napi_create_reference) /.test(leak);
    if (/kiln\.node|kiln::/.test(leak) && !aliveAtExit) {
      failures++;
      process.stdout.write(`${file}: a leak in Kiln's code:\n${leak}\n`);
    } else {
      foreignLeaks++;
    }
  }
}
process.stdout.write(`sanitizer reports: ${failures} of Kiln's; ${foreignLeaks} leaks of Node/V8 or of objects alive at exit (not Kiln's, ignored)\n`);
process.exit(failures > 0 ? 1 : 0);
