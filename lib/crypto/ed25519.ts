/** Ed25519 signature checks and the statements users sign, shared by server and clients. */
import { fromBase64Url } from "../util/base64.ts";

const ED25519 = { name: "Ed25519" } as const;

/** Checks an Ed25519 signature by the holder of `publicKey` (base64url). Never throws. */
export async function verifySignature(
  publicKey: string,
  signature: string,
  data: Uint8Array<ArrayBuffer>,
): Promise<boolean> {
  try {
    const key = await crypto.subtle.importKey("raw", fromBase64Url(publicKey), ED25519, false, [
      "verify",
    ]);
    return await crypto.subtle.verify(ED25519, key, fromBase64Url(signature), data);
  } catch {
    return false;
  }
}

/** What a user signs to publish their mail key, so others know it is theirs. */
export function mailKeyStatement(user: string, mailKey: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`confab-mail-key-v1\n${user.toLowerCase()}\n${mailKey}`);
}
