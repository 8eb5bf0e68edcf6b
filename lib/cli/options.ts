/** Option parsers for the command lines (commander), shared by the entry points and scripts. */
import { InvalidArgumentError } from "commander";

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
