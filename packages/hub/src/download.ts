// Hub downloads into huggingface_hub's cache layout, through @huggingface/hub's client:
//   <cache>/models--org--name/refs/<revision>          the commit a branch or tag pointed to
//   <cache>/models--org--name/blobs/<etag>             file contents, named by the Hub's hash
//   <cache>/models--org--name/snapshots/<commit>/<f>   links to the blobs: the model folder
// Only the files a conversion reads are fetched; each is written to `<blob>.incomplete` first, resumed
// from there after a cut (a Range request), checked against its size and the Hub's hash, then renamed.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { downloadFile, fileDownloadInfo, HubApiError, modelInfo } from '@huggingface/hub';
import { withFileLock } from './file-lock';
import { defaultHubUrl, hubCacheDir, offlineFromEnv, tokenFromEnv } from './hub-env';
import { isCommitHash, parseHubModelId } from './model-id';

export interface DownloadProgress {
  /** The file being downloaded. */
  file: string;
  /** Its bytes on disk so far (a resumed file starts where the last attempt stopped). */
  fileBytes: number;
  fileSize: number;
  /** Bytes of every file of the model on disk so far, and in all. */
  bytes: number;
  totalBytes: number;
}

export interface DownloadModelOptions {
  /** Overrides the id's `@revision`: a branch, tag or commit hash. Default: the id's, else "main". */
  revision?: string;
  /** Access token for gated and private models. Default: `$HF_TOKEN`, `$HUGGING_FACE_HUB_TOKEN`, else `$HF_HOME/token`. */
  token?: string;
  /** The Hub's base URL. Default: `$HF_ENDPOINT`, else https://huggingface.co. */
  hubUrl?: string;
  /** The huggingface_hub cache folder. Default: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /**
   * Use only what is already downloaded, without any request: fails, naming the model, when it is not
   * complete in the cache. Default: `$HF_HUB_OFFLINE` (1, true, yes or on), else false.
   */
  offline?: boolean;
  /** Download progress, several times a second at most per file. Default: none. */
  onProgress?: (progress: DownloadProgress) => void;
  /** Attempts per file when a transfer is cut (each resumes where the last one stopped). Default 5; at least 1. */
  attempts?: number;
  /** Stops the download when aborted (what is on disk is kept and resumed next time). Default: none. */
  signal?: AbortSignal;
}

export interface DownloadedModel {
  /** `org/name`. */
  repo: string;
  /** The revision asked for (branch, tag or commit). */
  revision: string;
  /** The commit it resolved to. */
  commit: string;
  /** The model folder: the snapshot of that commit, ready for convertCheckpoint. */
  dir: string;
  /** The files of the folder Kiln uses. */
  files: string[];
  /** Bytes transferred by this call (0 when everything was already there). */
  downloadedBytes: number;
  /** True when no request was made (offline mode, or the Hub could not be reached and the cache was complete). */
  fromCache: boolean;
}

/** Raised for every Hub failure, with the HTTP status when there was one. */
export class HubDownloadError extends Error {
  constructor(
    message: string,
    readonly statusCode?: number,
  ) {
    super(message);
    this.name = 'HubDownloadError';
  }
}

/** Top-level files a conversion reads: config, weights, tokenizer, generation config, chat template. */
const WANTED = new Set([
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
  'added_tokens.json',
  'vocab.json',
  'merges.txt',
  'chat_template.jinja',
  'chat_template.json',
]);
const INDEX = 'model.safetensors.index.json';

/**
 * The files of a repository Kiln downloads: the WANTED ones, and the safetensors weights (only the
 * shards that `model.safetensors.index.json` names when the repository has one; `shards` is then that
 * list). Files in sub-folders are left out.
 */
export function filesToDownload(repoFiles: readonly string[], shards?: readonly string[]): string[] {
  const top = repoFiles.filter((file) => !file.includes('/'));
  const weights = shards ? top.filter((file) => shards.includes(file)) : top.filter((file) => file.endsWith('.safetensors'));
  return [...top.filter((file) => WANTED.has(file) || (file === INDEX && shards !== undefined)), ...weights].sort();
}

function storageDir(cacheDir: string, repo: string): string {
  return path.join(cacheDir, `models--${repo.split('/').join('--')}`);
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => true,
    () => false,
  );
}

/** The shard names of a safetensors index. */
async function shardsOf(indexFile: string, label: string): Promise<string[]> {
  let index: { weight_map?: Record<string, string> };
  try {
    index = JSON.parse(await fs.readFile(indexFile, 'utf8'));
  } catch (error) {
    throw new HubDownloadError(`${label}: ${INDEX} is not valid JSON (${(error as Error).message})`);
  }
  if (typeof index.weight_map !== 'object' || index.weight_map === null) throw new HubDownloadError(`${label}: ${INDEX} has no "weight_map"`);
  return [...new Set(Object.values(index.weight_map))].sort();
}

/** The model folder of a complete snapshot in the cache, or a message saying what is missing. */
async function cachedSnapshot(cacheDir: string, repo: string, revision: string): Promise<{ commit: string; dir: string; files: string[] } | string> {
  const storage = storageDir(cacheDir, repo);
  const commit = isCommitHash(revision) ? revision : (await fs.readFile(path.join(storage, 'refs', revision), 'utf8').catch(() => '')).trim();
  if (!commit) return `${repo}@${revision} was never downloaded into ${cacheDir}`;
  const dir = path.join(storage, 'snapshots', commit);
  const present = await fs.readdir(dir).catch(() => [] as string[]);
  const complete: string[] = [];
  for (const file of present) if (await exists(path.join(dir, file))) complete.push(file);  // a link to a blob that is there
  if (!complete.includes('config.json')) return `the cached snapshot ${dir} has no config.json`;
  const shards = complete.includes(INDEX) ? await shardsOf(path.join(dir, INDEX), `${repo}@${revision}`) : undefined;
  const missing = (shards ?? []).filter((shard) => !complete.includes(shard));
  if (missing.length > 0) return `the cached snapshot ${dir} lacks ${missing.join(', ')}`;
  const files = filesToDownload(complete, shards);
  if (!files.some((file) => file.endsWith('.safetensors'))) return `the cached snapshot ${dir} has no .safetensors weights`;
  return { commit, dir, files };
}

/** The Hub's hash of a file, from its ETag: a sha256 for LFS files, git's blob sha1 for the others. */
function normalizeEtag(etag: string): string {
  return etag.replace(/^W\//, '').replace(/^"|"$/g, '');
}

function newHasher(etag: string, size: number): { hash: Hash; expected: string } | undefined {
  if (/^[0-9a-f]{64}$/.test(etag)) return { hash: createHash('sha256'), expected: etag };
  if (/^[0-9a-f]{40}$/.test(etag)) {
    const hash = createHash('sha1');
    hash.update(`blob ${size}\0`);  // git's object header
    return { hash, expected: etag };
  }
  return undefined;  // another ETag form: the size is checked, not the contents
}

/** Links `<snapshot>/<file>` to its blob (relative, as huggingface_hub does), or copies where links fail. */
async function linkIntoSnapshot(blobPath: string, pointerPath: string): Promise<void> {
  await fs.mkdir(path.dirname(pointerPath), { recursive: true });
  await fs.rm(pointerPath, { force: true });
  try {
    await fs.symlink(path.relative(path.dirname(pointerPath), blobPath), pointerPath);
  } catch {
    await fs.copyFile(blobPath, pointerPath);
  }
}

interface Call {
  repo: string;
  revision: string;
  hubUrl: string;
  accessToken: string | undefined;
  /** The X-Error-Code header of the last failed response (RepoNotFound, RevisionNotFound, GatedRepo, EntryNotFound). */
  lastErrorCode: string | undefined;
  fetch: typeof fetch;
}

/** A Hub error as a message that says what to do. */
function explain(call: Call, error: unknown, file?: string): Error {
  const label = `${call.repo}@${call.revision}`;
  if (!(error instanceof HubApiError)) {
    const cause = (error as Error)?.cause as { code?: string; message?: string } | undefined;
    return new HubDownloadError(
      `cannot reach ${call.hubUrl} for ${label}: ${(error as Error)?.message ?? error}${cause?.code ? ` (${cause.code})` : ''}` +
        ' (set HF_HUB_OFFLINE=1 to use only what is already downloaded)',
    );
  }
  const status = error.statusCode;
  const code = call.lastErrorCode;
  // The Hub's own message (error.message also holds the URL, whose query may say "gated").
  const said = String((error.data as { error?: unknown } | undefined)?.error ?? '');
  const tokenHint = call.accessToken ? 'the token given (HF_TOKEN) has no access to it' : 'no token was given: set HF_TOKEN to a token of an account with access';
  if (code === 'GatedRepo' || (!code && (status === 401 || status === 403) && /gated|restricted/i.test(said))) {
    return new HubDownloadError(`${call.repo} is a gated model: accept its conditions on ${call.hubUrl}/${call.repo}; ${tokenHint} (HTTP ${status})`, status);
  }
  if (code === 'RepoNotFound' || (status === 404 && !code && !file)) {
    return new HubDownloadError(`model ${call.repo} was not found on ${call.hubUrl}${call.accessToken ? '' : ' (if it is private, set HF_TOKEN)'} (HTTP ${status})`, status);
  }
  if (code === 'RevisionNotFound') {
    return new HubDownloadError(`model ${call.repo} has no revision "${call.revision}" (a branch, tag or commit) (HTTP ${status})`, status);
  }
  if (code === 'EntryNotFound' || (status === 404 && file)) {
    return new HubDownloadError(`model ${label} has no file ${file ?? ''}, though the Hub listed it (HTTP ${status})`, status);
  }
  if (status === 401 || status === 403) {
    return new HubDownloadError(`access to ${call.repo} was refused: ${tokenHint} (HTTP ${status})`, status);
  }
  return new HubDownloadError(`${label}${file ? `, ${file}` : ''}: the Hub answered HTTP ${status}${said ? `: ${said}` : ''}`, status);
}

async function hub<T>(call: Call, request: () => Promise<T>, file?: string): Promise<T> {
  call.lastErrorCode = undefined;
  try {
    return await request();
  } catch (error) {
    throw explain(call, error, file);
  }
}

/** Downloads one file into its blob, resuming an `.incomplete` one; returns the bytes transferred. */
async function downloadBlob(
  call: Call,
  file: string,
  commit: string,
  info: { etag: string; size: number; url: string },
  blobPath: string,
  attempts: number,
  report: (fileBytes: number) => void,
  signal: AbortSignal | undefined,
): Promise<number> {
  const incomplete = `${blobPath}.incomplete`;
  let transferred = 0;
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted();
    let offset = (await fs.stat(incomplete).catch(() => undefined))?.size ?? 0;
    if (offset > info.size) {
      await fs.rm(incomplete, { force: true });
      offset = 0;
    }
    const hasher = newHasher(info.etag, info.size);
    if (hasher && offset > 0) {
      for await (const chunk of createReadStream(incomplete, { end: offset - 1 })) hasher.hash.update(chunk as Buffer);
    }
    report(offset);
    let written = offset;
    try {
      if (offset < info.size) {
        const blob = await hub(
          call,
          () => downloadFile({ repo: call.repo, path: file, revision: commit, hubUrl: call.hubUrl, accessToken: call.accessToken, fetch: call.fetch, downloadInfo: info, xet: false }),
          file,
        );
        if (!blob) throw new HubDownloadError(`model ${call.repo}@${call.revision} has no file ${file}, though the Hub listed it`, 404);
        const part = offset > 0 ? blob.slice(offset) : blob;
        const out = await fs.open(incomplete, 'a');
        try {
          let lastReport = 0;
          for await (const chunk of part.stream() as unknown as AsyncIterable<Uint8Array>) {
            signal?.throwIfAborted();
            if (written + chunk.length > info.size) throw new HubDownloadError(`${file}: the Hub sent more than its ${info.size} bytes`);
            await out.write(chunk);
            hasher?.hash.update(chunk);
            written += chunk.length;
            transferred += chunk.length;
            if (Date.now() - lastReport > 100) {
              lastReport = Date.now();
              report(written);
            }
          }
        } finally {
          await out.close();
        }
      }
      if (written !== info.size) throw new Error(`the transfer ended at ${written} of ${info.size} bytes`);
    } catch (error) {
      if (error instanceof HubDownloadError && error.statusCode !== undefined) throw error;
      if (signal?.aborted) throw signal.reason;
      if (error instanceof HubDownloadError && /more than/.test(error.message)) await fs.rm(incomplete, { force: true });
      if (attempt >= attempts) {
        throw new HubDownloadError(
          `${call.repo}@${call.revision}: the download of ${file} was cut at ${written} of ${info.size} bytes after ${attempts} attempts ` +
            `(${(error as Error)?.message ?? error}); run it again to resume from there`,
        );
      }
      continue;
    }
    report(written);
    if (hasher) {
      const actual = hasher.hash.digest('hex');
      if (actual !== hasher.expected) {
        await fs.rm(incomplete, { force: true });
        if (attempt >= attempts) {
          throw new HubDownloadError(`${call.repo}@${call.revision}: ${file} does not match the Hub's hash (${hasher.expected}, got ${actual}); it was deleted`);
        }
        continue;
      }
    }
    await fs.rename(incomplete, blobPath);
    return transferred;
  }
}

/**
 * Downloads the files of a Hub model that a conversion reads (config.json, generation_config.json, the
 * safetensors weights, tokenizer files, chat template) into the huggingface_hub cache, and returns the
 * snapshot folder. Files already there are not fetched again; a cut transfer resumes where it stopped
 * (in this call, up to `attempts` times, or in a later one); every file is checked against its size and
 * the Hub's hash (sha256 for LFS files, git's sha1 for the others). Concurrent downloads of one model,
 * from several processes, take turns (a lock file in `<cache>/.locks`). Errors say what happened: a
 * gated model without a token (401), a missing repository, revision or file, an unreachable Hub.
 */
export async function downloadModel(id: string, options: DownloadModelOptions = {}): Promise<DownloadedModel> {
  const parsed = parseHubModelId(id);
  const repo = parsed.repo;
  const revision = options.revision ?? parsed.revision;
  const cacheDir = path.resolve(options.cacheDir ?? hubCacheDir());
  const attempts = Math.max(1, Math.floor(options.attempts ?? 5));
  const offline = options.offline ?? offlineFromEnv();
  if (offline) {
    const cached = await cachedSnapshot(cacheDir, repo, revision);
    if (typeof cached === 'string') {
      throw new HubDownloadError(`offline mode (HF_HUB_OFFLINE): ${repo}@${revision} is not complete in the Hugging Face cache: ${cached}; download it once online (kiln pull ${repo})`);
    }
    return { repo, revision, ...cached, downloadedBytes: 0, fromCache: true };
  }

  const call: Call = {
    repo,
    revision,
    hubUrl: (options.hubUrl ?? defaultHubUrl()).replace(/\/+$/, ''),
    accessToken: options.token ?? (await tokenFromEnv()),
    lastErrorCode: undefined,
    fetch: async (input, init) => {
      const response = await fetch(input, { ...init, signal: options.signal });
      if (!response.ok) call.lastErrorCode = response.headers.get('x-error-code') ?? undefined;
      return response;
    },
  };
  let info;
  try {
    info = await hub(call, () => modelInfo({ name: repo, revision, hubUrl: call.hubUrl, accessToken: call.accessToken, fetch: call.fetch, additionalFields: ['sha', 'filePaths'] }));
  } catch (error) {
    // The Hub cannot be reached (no HTTP answer): a complete snapshot in the cache will do.
    if (error instanceof HubDownloadError && error.statusCode === undefined && !options.signal?.aborted) {
      const cached = await cachedSnapshot(cacheDir, repo, revision);
      if (typeof cached !== 'string') return { repo, revision, ...cached, downloadedBytes: 0, fromCache: true };
    }
    throw error;
  }
  const commit = info.sha;
  if (typeof commit !== 'string' || !isCommitHash(commit)) throw new HubDownloadError(`${call.hubUrl} gave no commit hash for ${repo}@${revision}`);
  const repoFiles = info.filePaths ?? [];
  const label = `${repo}@${revision}`;
  if (!repoFiles.includes('config.json')) throw new HubDownloadError(`model ${label} has no config.json: it is not a transformers model Kiln can convert`);

  const storage = storageDir(cacheDir, repo);
  const snapshot = path.join(storage, 'snapshots', commit);
  let downloadedBytes = 0;
  await withFileLock(
    path.join(cacheDir, '.locks', `${path.basename(storage)}.kiln.lock`),
    async () => {
      // Small files first (the index names the shards to fetch), then the weights.
      const fetchFiles = async (files: string[]): Promise<void> => {
        const infos: { file: string; etag: string; size: number; url: string }[] = [];
        for (const file of files) {
          if (await exists(path.join(snapshot, file))) continue;
          const found = await hub(call, () => fileDownloadInfo({ repo, path: file, revision: commit, hubUrl: call.hubUrl, accessToken: call.accessToken, fetch: call.fetch }), file);
          if (!found) throw new HubDownloadError(`model ${label} has no file ${file}, though the Hub listed it (HTTP 404)`, 404);
          infos.push({ file, ...found, etag: normalizeEtag(found.etag) });
        }
        const totalBytes = infos.reduce((sum, entry) => sum + entry.size, 0);
        let doneBytes = 0;
        for (const entry of infos) {
          const blobPath = path.join(storage, 'blobs', entry.etag);
          await fs.mkdir(path.dirname(blobPath), { recursive: true });
          if (!(await exists(blobPath))) {
            downloadedBytes += await downloadBlob(
              call,
              entry.file,
              commit,
              entry,
              blobPath,
              attempts,
              (fileBytes) => options.onProgress?.({ file: entry.file, fileBytes, fileSize: entry.size, bytes: doneBytes + fileBytes, totalBytes }),
              options.signal,
            );
          }
          doneBytes += entry.size;
          options.onProgress?.({ file: entry.file, fileBytes: entry.size, fileSize: entry.size, bytes: doneBytes, totalBytes });
          await linkIntoSnapshot(blobPath, path.join(snapshot, entry.file));
        }
      };
      const small = filesToDownload(repoFiles, []).filter((file) => WANTED.has(file));
      await fetchFiles(repoFiles.includes(INDEX) ? [...small, INDEX] : small);
      const shards = repoFiles.includes(INDEX) ? await shardsOf(path.join(snapshot, INDEX), label) : undefined;
      const weights = filesToDownload(repoFiles, shards).filter((file) => file.endsWith('.safetensors'));
      if (weights.length === 0) {
        const others = repoFiles.filter((file) => /\.(bin|pt|pth|gguf|h5|msgpack)$/.test(file));
        throw new HubDownloadError(`model ${label} has no .safetensors weights, the format Kiln converts${others.length > 0 ? ` (it has ${others.join(', ')})` : ''}`);
      }
      const absent = weights.filter((file) => !repoFiles.includes(file));
      if (absent.length > 0) throw new HubDownloadError(`model ${label}: ${INDEX} names ${absent.join(', ')}, which the repository does not have`);
      await fetchFiles(weights);
      if (!isCommitHash(revision)) {
        const ref = path.join(storage, 'refs', revision);
        await fs.mkdir(path.dirname(ref), { recursive: true });
        await fs.writeFile(ref, commit);
      }
    },
    { signal: options.signal },
  );
  const cached = await cachedSnapshot(cacheDir, repo, commit);
  if (typeof cached === 'string') throw new HubDownloadError(`${label}: ${cached}`);
  return { repo, revision, commit, dir: snapshot, files: cached.files, downloadedBytes, fromCache: false };
}
