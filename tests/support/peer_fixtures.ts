/**
 * Fixtures for tests of peer links without a server: identities and the directory that
 * `acceptPeer()` consults, and a deadline for waits.
 */
import { Identity } from "../../lib/peer/identity.ts";
import { RemoteError } from "../../lib/protocol/errors.ts";

/** Rejects when `promise` has not settled within `ms`; the timer never outlives the wait. */
export async function within<T>(promise: Promise<T>, ms = 15_000, what = "wait"): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Fresh identities for `names`, and the server's directory of them as acceptPeer sees it. */
export async function testDirectory<const N extends string>(...names: N[]): Promise<{
  identities: Record<N, Identity>;
  resolveKey: (user: string) => Promise<{ user: string; publicKey: string }>;
}> {
  const identities = {} as Record<N, Identity>;
  const entries = new Map<string, { user: string; publicKey: string }>();
  for (const name of names) {
    const identity = (await Identity.generate()).identity;
    identities[name] = identity;
    entries.set(name.toLowerCase(), { user: name, publicKey: identity.publicKey });
  }
  return {
    identities,
    resolveKey: (user) => {
      const found = entries.get(user.toLowerCase());
      return found
        ? Promise.resolve(found)
        : Promise.reject(new RemoteError("NO_SUCH_USER", `no user ${user}`));
    },
  };
}
