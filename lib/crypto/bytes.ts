/** Byte-string helpers shared by lib/crypto; WebCrypto wants `ArrayBuffer`-backed views. */

/** Returns the bytes as an `ArrayBuffer`-backed view, copying only a shared-memory view. */
export function bytesOf(data: Uint8Array): Uint8Array<ArrayBuffer> {
  return isArrayBufferBacked(data) ? data : new Uint8Array(data);
}

/** Concatenates byte strings into one new array. */
export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function isArrayBufferBacked(data: Uint8Array): data is Uint8Array<ArrayBuffer> {
  return data.buffer instanceof ArrayBuffer;
}
