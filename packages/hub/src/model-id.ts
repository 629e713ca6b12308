/** A Hub model id, `org/name`, with the revision asked for. */
export interface HubModelId {
  /** `org/name`. */
  repo: string;
  /** A branch, tag or commit hash. Default "main". */
  revision: string;
}

const ID = /^([A-Za-z0-9][A-Za-z0-9_.-]*)\/([A-Za-z0-9_.-]+)(?:@([A-Za-z0-9_.\/-]+))?$/;

/** Whether `text` has the shape of a Hub model id, `org/name` or `org/name@revision`. */
export function isHubModelId(text: string): boolean {
  const match = ID.exec(text);
  return (
    match !== null &&
    !match[1].endsWith('.') &&
    match[2] !== '.' &&
    match[2] !== '..' &&
    !`${match[1]}/${match[2]}`.includes('--') &&
    (match[3] === undefined || !match[3].split('/').some((part) => part === '' || part === '.' || part === '..'))
  );
}

/** Splits `org/name[@revision]`; throws, naming the expected form, for anything else. */
export function parseHubModelId(text: string): HubModelId {
  if (!isHubModelId(text)) {
    throw new Error(`${JSON.stringify(text)} is not a Hugging Face model id: expected org/name or org/name@revision (a branch, tag or commit)`);
  }
  const match = ID.exec(text) as RegExpExecArray;
  return { repo: `${match[1]}/${match[2]}`, revision: match[3] ?? 'main' };
}

/** A 40-hex-digit commit hash. */
export function isCommitHash(revision: string): boolean {
  return /^[0-9a-f]{40}$/.test(revision);
}
