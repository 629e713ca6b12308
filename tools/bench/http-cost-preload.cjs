// Preloaded (node -r) into `kiln bench --url` by http-cost.mjs: prints this process's main-thread CPU
// time (from /proc, Linux only) from its first POST /v1/completions to its exit, so that start-up is left
// out. The main thread's own figure, not process.cpuUsage(), which sums every thread.
const fs = require('node:fs');
const http = require('node:http');
const mainNs = () => Number(fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]);
let start;
const request = http.request;
http.request = function (url, ...rest) {
  if (start === undefined && String(url).endsWith('/v1/completions')) start = mainNs();
  return request.call(this, url, ...rest);
};
process.on('exit', () => {
  if (start !== undefined) fs.writeSync(2, `KILN_HTTP_COST_CLIENT_MAIN_NS ${mainNs() - start}\n`);
});
