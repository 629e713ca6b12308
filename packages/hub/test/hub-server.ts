// A Hugging Face Hub on 127.0.0.1 for the tests, in the Hub's URL layout and with its answers:
//   GET /api/models/<org>/<name>/revision/<rev>   model info: sha, siblings
//   GET /<org>/<name>/resolve/<rev>/<file>         the file (Range requests; ETag / X-Linked-ETag)
// Errors as the Hub gives them: 401 + X-Error-Code RepoNotFound for an unknown repository without a
// token (404 with one), 401 GatedRepo for a gated one without an accepted token, 404 RevisionNotFound,
// 404 EntryNotFound. `cut` makes the next full transfer of a file stop after some bytes (the socket is
// destroyed mid-body), to test resuming.
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeRepo {
  /** File name to contents. */
  files: Map<string, Buffer>;
  /** Files listed in the model info but answered 404 by resolve (a broken repository). */
  unserved?: string[];
  /** Branches and tags to commit; the commit itself is also a revision. */
  refs: Record<string, string>;
  /** Only this token may read it (gated). */
  gatedToken?: string;
  /** Files stored with LFS: their ETag is the sha256 (X-Linked-ETag), the others' is git's blob sha1. */
  lfs: (file: string) => boolean;
  /** ETags to announce instead of the contents' hash (a corrupted transfer). */
  etags?: Record<string, string>;
}

export interface RecordedRequest {
  method: string;
  url: string;
  range?: string;
  authorization?: string;
}

export interface FakeHub {
  url: string;
  repos: Map<string, FakeRepo>;
  requests: RecordedRequest[];
  /** The next full (not 0-0) transfer of `file` sends `bytes` bytes, then the connection drops. */
  cut: Map<string, number>;
  close(): Promise<void>;
}

export function gitBlobSha1(data: Buffer): string {
  return createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function sendError(response: http.ServerResponse, status: number, code: string, message: string): void {
  response.writeHead(status, { 'content-type': 'application/json', 'x-error-code': code, 'x-error-message': message });
  response.end(JSON.stringify({ error: message }));
}

export async function startFakeHub(): Promise<FakeHub> {
  const repos = new Map<string, FakeRepo>();
  const requests: RecordedRequest[] = [];
  const cut = new Map<string, number>();
  const sockets = new Set<import('node:net').Socket>();

  /** The repository and commit of a request, or an error already sent. */
  function resolveRepo(repoId: string, revision: string, authorization: string | undefined, response: http.ServerResponse): { repo: FakeRepo; commit: string } | undefined {
    const repo = repos.get(repoId);
    const token = authorization?.replace(/^Bearer /, '');
    if (!repo) {
      if (token) sendError(response, 404, 'RepoNotFound', 'Repository not found');
      else sendError(response, 401, 'RepoNotFound', 'Invalid username or password.');
      return undefined;
    }
    if (repo.gatedToken !== undefined && token !== repo.gatedToken) {
      sendError(response, 401, 'GatedRepo', `Access to model ${repoId} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
      return undefined;
    }
    const commit = repo.refs[revision] ?? (Object.values(repo.refs).includes(revision) ? revision : undefined);
    if (!commit) {
      sendError(response, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
      return undefined;
    }
    return { repo, commit };
  }

  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    requests.push({ method: request.method ?? 'GET', url: url.pathname, range: request.headers.range, authorization: request.headers.authorization });
    const parts = url.pathname.split('/').map(decodeURIComponent);
    // /api/models/<org>/<name>/revision/<rev>
    if (parts[1] === 'api' && parts[2] === 'models' && parts[5] === 'revision') {
      const repoId = `${parts[3]}/${parts[4]}`;
      const found = resolveRepo(repoId, parts.slice(6).join('/'), request.headers.authorization, response);
      if (!found) return;
      const siblings = [...found.repo.files.keys(), ...(found.repo.unserved ?? [])].map((rfilename) => ({ rfilename }));
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ _id: repoId, id: repoId, sha: found.commit, siblings, private: false, gated: found.repo.gatedToken ? 'manual' : false, downloads: 0, likes: 0, lastModified: '2025-01-01T00:00:00.000Z', pipeline_tag: 'text-generation' }));
      return;
    }
    // /<org>/<name>/resolve/<rev>/<file>
    if (parts[3] === 'resolve' && parts.length >= 6) {
      const repoId = `${parts[1]}/${parts[2]}`;
      const found = resolveRepo(repoId, parts[4], request.headers.authorization, response);
      if (!found) return;
      const file = parts.slice(5).join('/');
      const data = found.repo.files.get(file);
      if (!data) {
        sendError(response, 404, 'EntryNotFound', `${file} does not exist on "${parts[4]}"`);
        return;
      }
      const etag = found.repo.etags?.[file] ?? (found.repo.lfs(file) ? sha256(data) : gitBlobSha1(data));
      const headers: http.OutgoingHttpHeaders = {
        'content-type': 'application/octet-stream',
        'accept-ranges': 'bytes',
        etag: `"${etag}"`,
        'x-repo-commit': found.commit,
        ...(found.repo.lfs(file) ? { 'x-linked-etag': `"${etag}"`, 'x-linked-size': String(data.length) } : {}),
      };
      const range = /^bytes=(\d+)-(\d*)$/.exec(request.headers.range ?? '');
      let start = 0;
      let end = data.length - 1;
      if (range) {
        start = Number(range[1]);
        end = range[2] === '' ? data.length - 1 : Math.min(Number(range[2]), data.length - 1);
        if (start >= data.length) {
          response.writeHead(416, { 'content-range': `bytes */${data.length}` });
          response.end();
          return;
        }
        headers['content-range'] = `bytes ${start}-${end}/${data.length}`;
      }
      headers['content-length'] = String(end - start + 1);
      response.writeHead(range ? 206 : 200, headers);
      const body = data.subarray(start, end + 1);
      const cutAt = cut.get(file);
      if (cutAt !== undefined && !(start === 0 && end === 0)) {
        cut.delete(file);
        response.write(body.subarray(0, cutAt), () => setTimeout(() => request.socket.destroy(), 20));
        return;
      }
      response.end(body);
      return;
    }
    sendError(response, 404, 'NotFound', `no route for ${url.pathname}`);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    repos,
    requests,
    cut,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
