/** A generation option has an invalid value. The message names the option and the value at fault. */
export class SamplingConfigError extends Error {
  /** The option at fault, as the public API spells it (e.g. "maxTokens"). */
  readonly option: string;

  constructor(option: string, message: string) {
    super(message);
    this.name = 'SamplingConfigError';
    this.option = option;
  }
}
