export { downloadModel, filesToDownload, HubDownloadError } from './download';
export type { DownloadedModel, DownloadModelOptions, DownloadProgress } from './download';
export { withFileLock } from './file-lock';
export type { FileLockOptions, LockHolder } from './file-lock';
export { defaultHubUrl, hfHome, hubCacheDir, offlineFromEnv, tokenFromEnv } from './hub-env';
export { isCommitHash, isHubModelId, parseHubModelId } from './model-id';
export type { HubModelId } from './model-id';
