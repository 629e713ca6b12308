/**
 * A Hugging Face or Kiln checkpoint that cannot be converted or read: the message starts with the file
 * (or folder) at fault. Problems with one key of a JSON file are `ConfigError`s from @kiln/models.
 */
export class ConvertError extends Error {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = 'ConvertError';
  }
}
