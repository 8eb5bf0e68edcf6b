/** Option parsers shared by the entry points and scripts. */

/**
 * A bad option value, with a message a person can act on. It carries the code the scripts'
 * option library looks for, so it reads as "argument 'x' is invalid. …" there too.
 */
export class InvalidArgumentError extends RangeError {
  readonly code = "commander.invalidArgument";
  readonly exitCode = 1;

  constructor(message: string) {
    super(message);
    this.name = "InvalidArgumentError";
  }
}

/** A parser for a whole number from `min` to `max`, with a message a person can act on. */
export function intOption(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) {
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
    }
    return n;
  };
}
