/**
 * Hands the memory of a large buffer back at once. Bulk transfers pass every byte through
 * buffers that node:crypto allocates outside the JS heap (one per Noise message sealed or
 * opened); V8 frees them only at a full collection, after tens of MiB have piled up, which made
 * a transfer's memory grow well past its working set, and collecting often cost tens of ms each
 * time. Detaching a buffer whose last use is known frees it now, and the allocator hands the
 * same memory to the next one.
 */

/**
 * Frees `bytes`' memory now when the view spans a buffer of its own (a pooled or shared buffer
 * is left alone). Every other view of that buffer becomes empty: call it only on the last use.
 */
export function freeNow(bytes: Uint8Array): void {
  const buffer = bytes.buffer;
  if (
    buffer instanceof ArrayBuffer && !buffer.detached && bytes.byteOffset === 0 &&
    bytes.byteLength === buffer.byteLength && buffer.byteLength > 0
  ) {
    buffer.transfer(0);
  }
}
