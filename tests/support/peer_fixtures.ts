/**
 * Fixtures for tests of peer links without a server: identities and the directory that
 * `acceptPeer()` consults, a stand-in link that records what is sent on it, and a deadline for
 * waits.
 */
import type { ClientStore } from "../../lib/client/client_store.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import type { GroupHost } from "../../lib/client/group_chats.ts";
import type { TransferHost } from "../../lib/client/transfers.ts";
import { join } from "../../lib/util/paths.ts";
import { Identity } from "../../lib/peer/identity.ts";
import type { PeerLink } from "../../lib/peer/peer_link.ts";
import { RemoteError } from "../../lib/protocol/errors.ts";
import type { PeerMessage } from "../../lib/protocol/messages.ts";

/** A link to `user` that records what is sent on it, and never closes. */
export function standIn(user: string): PeerLink & { sent: PeerMessage[] } {
  const sent: PeerMessage[] = [];
  const fc = {
    send: (m: PeerMessage) => {
      sent.push(m);
      return Promise.resolve();
    },
    closed: new Promise(() => {}),
    isClosed: false,
  };
  return { user, initiator: user, outbound: false, fc, sent } as unknown as
    & PeerLink
    & { sent: PeerMessage[] };
}

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

/**
 * Bob's side of the group room, over `store`, with the links and keys given: every user a
 * contact, nobody dialable, nothing sent through the server.
 */
export function bobsHost(
  store: ClientStore,
  events: ClientEvent[],
  links: Record<string, PeerLink>,
  keys: Record<string, string>,
): GroupHost {
  return {
    user: "bob",
    store,
    emit: (e) => events.push(e),
    link: (u) => Promise.reject(new Error(`${u} is away`)),
    openLink: (u) => links[u.toLowerCase()],
    sendGroup: () => Promise.resolve("queued"),
    kick: () => {},
    status: () => {},
    setCurrent: () => {},
    current: undefined,
    chatPartner: undefined,
    selfEndpoint: () => undefined,
    isContact: () => Promise.resolve(true),
    keyOf: (u) => Promise.resolve(keys[u.toLowerCase()]),
  };
}

/**
 * Bob's side of file transfers, over `store`, keeping files under `dir`, with `link` the one link
 * there is: files up to 1 GiB, offers asked about (no contacts known) and waiting an hour, no
 * disk space kept free, in no group; `overrides` changes any of it.
 */
export function bobsTransferHost(
  store: ClientStore,
  dir: string,
  events: ClientEvent[],
  link: PeerLink,
  overrides: Partial<TransferHost> = {},
): TransferHost {
  return {
    user: "bob",
    store,
    emit: (e) => events.push(e),
    link: () => Promise.resolve(link),
    replacement: () => Promise.resolve(undefined),
    downloadsDir: join(dir, "downloads"),
    partialDir: join(dir, "partial"),
    maxFileSize: 1 << 30,
    autoAccept: "ask",
    isContact: () => Promise.resolve(false),
    isGroupMember: () => false,
    maxPartialBytes: 1 << 30,
    keepFreeBytes: 0,
    offerTimeoutMs: 3_600_000,
    ...overrides,
  };
}
