/**
 * base64url without padding, for keys, signatures, nonces and sealed blobs on the wire. The
 * runtime's own codec (`Uint8Array.prototype.toBase64`): a string built byte by byte cost 30 µs
 * for a sealed message, this costs under 1.
 */

export function toBase64Url(bytes: Uint8Array): string {
  return bytes.toBase64({ alphabet: "base64url", omitPadding: true });
}

/** @throws {SyntaxError} on characters outside the base64url alphabet. */
export function fromBase64Url(text: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new SyntaxError("not base64url");
  return Uint8Array.fromBase64(text, { alphabet: "base64url" });
}
