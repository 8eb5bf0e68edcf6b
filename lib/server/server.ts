/**
 * The Confab rendezvous server: accounts, contacts, presence and the directory. It accepts
 * control connections and speaks the control protocol on each. Chat traffic goes peer to
 * peer; only when two peers cannot reach each other does it relay their (end-to-end
 * encrypted) bytes, within the operator's limits (lib/server/relay.ts).
 */
import { createHash, randomBytes } from "node:crypto";
import {
  asError,
  FramedConnection,
  SilentPeerError,
  SlowReaderError,
  writeAll,
} from "../net/framed_connection.ts";
import { openSecureChannel } from "../net/secure_channel.ts";
import type { KeyPair } from "../crypto/noise.ts";
import { loadOrCreateServerKey } from "./server_key.ts";
import { encodeFrame } from "../protocol/frame.ts";
import { ConnectionClosedError, type ErrorCode } from "../protocol/errors.ts";
import {
  type ClientMessage,
  ClientToServer,
  encodeMessage,
  HASH_REQUEST_TIMEOUT_MS,
  type MailRefusal,
  MAX_CONTACTS,
  MAX_MAIL_BATCH,
  MAX_MAIL_BATCH_TEXT,
  MAX_MAILBOX_ENTRIES,
  type ServerMessage,
} from "../protocol/messages.ts";
import { delay } from "../util/time.ts";
import {
  DEFAULT_PASSWORD_COST,
  hashPassword,
  kdfOf,
  LoginThrottle,
  needsRehash,
  RateLimit,
  verifyPassword,
} from "./accounts.ts";
import { isStrongPublicKey, mailKeyStatement, verifySignature } from "../crypto/ed25519.ts";
import { isStrongX25519Key } from "../crypto/x25519.ts";
import { loadNodeCrypto } from "../crypto/node_crypto.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";
import { receiptProofs } from "../crypto/receipt_tree.ts";
import {
  isStoreUnavailable,
  nameKey,
  type Receipt,
  type Resumed,
  type Resumption,
  type ServerStore,
  type SignedRead,
  type StoreEvent,
  type UserRecord,
} from "./store.ts";
import {
  DEFAULT_RELAY_LIMITS,
  Relay,
  type RelayedLinkInfo,
  type RelayLimits,
  RelayRefused,
} from "./relay.ts";
import { openStore } from "./open_store.ts";
import { Admission, GroupCommit } from "./admission.ts";
import { TICKET_LIFETIME_MS, TicketBox } from "./tickets.ts";

export interface ServerOptions {
  host?: string;
  port?: number;
  dataDir: string;
  /** A PostgreSQL URL: keep the state there, shared with other instances (else SQLite). */
  storeUrl?: string;
  /**
   * Connections this instance holds to the PostgreSQL database at most (default 10), besides
   * the one that listens for other instances' events.
   */
  storeConnections?: number;
  /** The server key file (default `<dataDir>/server-key.json`): one for all instances. */
  keyFile?: string;
  /** Connections held at most; kept below the process's file limit (20,000). */
  maxConnections?: number;
  /** Connections from one address at most (0: no limit), so one host cannot take them all. */
  maxPerAddress?: number;
  /** Time allowed for the first frame (`hello`). */
  helloTimeoutMs?: number;
  /** Time a connection may stay without logging in. */
  loginTimeoutMs?: number;
  /** How long a session token stays valid for re-attaching. */
  sessionMaxAgeMs?: number;
  /** Pending messages one user may have waiting at most. */
  maxPending?: number;
  /** Bytes (sealed) of pending messages one user may have waiting at most. */
  maxPendingBytes?: number;
  /** Pending messages one sender may have waiting for one user at most. */
  maxPendingPerSender?: number;
  /** Bytes (sealed) one sender may have waiting for one user at most. */
  maxPendingBytesPerSender?: number;
  /** scrypt cost (log2 N) of new password hashes; weaker stored ones are rehashed at login. */
  passwordCost?: number;
  /** Signups one address may make per hour (a burst of as many, then spread out; 0: no limit). */
  maxSignupsPerHour?: number;
  /** A client silent this long (no ping, nothing) is taken as gone. Clients ping after 30 s. */
  clientTimeoutMs?: number;
  /**
   * Bytes waiting to be written to one client at most (default
   * {@link DEFAULT_SERVER_WRITE_QUEUE}): a client that stops reading is dropped there, rather
   * than growing the server's memory with the pushes (presence, receipts, notices) it does
   * not read.
   */
  maxWriteQueue?: number;
  /** Where the server's log lines go. */
  log?: (line: string) => void;
  /** Relaying between peers that cannot reach each other: on/off and the operator's limits. */
  relay?: Partial<RelayLimits>;
  /**
   * Where clients reach this instance, told to a peer on another instance of the cluster
   * whose relay leg must join here (default: the address the asking client reached it at).
   */
  relayAddress?: { host: string; port: number };
  /**
   * A second port, where clients ask again which address they come from: if the answer
   * differs from the main port's, their NAT is symmetric and hole punching cannot work.
   * Default: the main port + 1 (any free port when the main port is 0); -1: none.
   */
  probePort?: number;
}

/** A logged-in user, alive as long as its control connection. */
export interface OnlineUser {
  user: string;
  host: string;
  peerPort: number;
  loginAt: number;
}

interface Session extends OnlineUser {
  key: string;
  /** base64url Noise static key of the control connection (relay legs must match it). */
  staticKey: string;
  fc: FramedConnection<ClientMessage>;
  registrySeq: number;
  tokenHash: Uint8Array;
  /** Unique per control connection: the directory's entry names the one in place. */
  attach: string;
  /** Settles once the store has this attachment (or failed to take it). */
  attached: Promise<void>;
  /**
   * Read receipts pushed to this client: being looked up, or sent and not acknowledged yet
   * (`receipts_ack` pushes the next ones). `again`: asked for meanwhile, look once more.
   */
  receipts?: { state: "looking" | "sent"; again: boolean; at: number };
}

/** A user's place in the directory, to take out if `attach` still holds it (`at`: they left). */
interface Place {
  user: string;
  attach: string;
  at: number;
}

interface ConnState {
  session: Session | undefined;
  host: string;
  /** Set when the connection became a relay leg: settles when its relayed link has ended. */
  relayLink?: Promise<void>;
  /** Settles once the latest `mail_send` on this connection has been handed to the store. */
  mailOrder: Promise<void>;
  /** This connection's `mail_send`s not answered yet (at most {@link MAIL_SEND_IN_FLIGHT}). */
  mailUnanswered: number;
  /** Called when one of them is answered, by a `mail_send` waiting for room. */
  mailRoom?: () => void;
  /**
   * When a `mail_send` on this connection last failed for want of the database. The ones the
   * client pipelined behind it fail too for a while, so none is stored ahead of it.
   */
  mailRefusedAt: number;
  /**
   * The recipient of this connection's last `mail_send`s, found and found a mutual contact at
   * `at`: a burst to one user asks the store once per {@link MAIL_CHECK_REUSE_MS}.
   */
  mailTo?: { session: Session; name: string; target: UserRecord; at: number };
  port: number;
  /** base64url Noise static key of this connection's client. */
  staticKey: string;
  /** When the ticket this connection resumed with was issued (undefined after a full XX). */
  ticketIssuedAt?: number;
  /** (Re)starts the deadline for logging in on this connection. */
  armLoginTimer: () => void;
  /** `error` frames of this client logged (past {@link CLIENT_ERRORS_LOGGED}, no more are). */
  errorsLogged: number;
  /** Set when the connection has ended: the session it ended with (if any). */
  ended?: { session: Session | undefined };
}

const MIB = 1024 * 1024;
/** `bytes` for people, in MiB. */
function mib(bytes: number): string {
  return `${Math.round(bytes / MIB * 10) / 10} MiB`;
}

/** Unanswered contact requests pushed at a login (all of them are in `contacts`). */
const REQUESTS_SHOWN_AT_LOGIN = 20;
/** Password hashes computed at once (each ≈ 0.3 s of a core and 128 MiB); more wait in line. */
const HASH_CONCURRENCY = 2;
/** Resumes committed in one transaction at most. */
const RESUME_BATCH = 64;
/** Transactions of resumes under way at once (a network database runs them side by side). */
const RESUME_BATCHES = 4;
/** Re-attaches served at once; more wait their turn. */
const RESUME_CONCURRENCY = 256;
/**
 * Sessions taken out of the directory in one transaction at most, and such transactions under
 * way at once. One each, a herd of clients giving up together (each a commit that wakes every
 * instance, and PostgreSQL lets one such commit through at a time) held every database
 * connection and starved the resumes that would have brought them back.
 */
const DETACH_BATCH = 256;
const DETACH_BATCHES = 2;
/**
 * A detach that failed (the database away for a moment) is tried again after this, the wait
 * doubling up to {@link DETACH_RETRY_MAX_MS}: left undone, the user would stay online in the
 * directory for good (this instance keeps its lease, and so their row, alive).
 */
const DETACH_RETRY_FIRST_MS = 1_000;
const DETACH_RETRY_MAX_MS = 30_000;
/** Store events passed on at once (each may take a query or two). */
const EVENT_CONCURRENCY = 4;
/**
 * After a `mail_send` failed for want of the database, the connection's next ones are refused
 * for this long: less than the client waits before it sends the outbox again (2 s), more than
 * a pipelined request takes to arrive.
 */
const MAIL_REFUSED_MS = 1_500;
/**
 * `mail_send`s of one connection handled at once (stored and answered, or waiting their turn);
 * the next waits for room, and nothing after it is handled meanwhile (the connection stops
 * reading once 256 messages or 2 MiB wait: see FramedConnection), so a client that sends and
 * never reads its answers is held back by TCP instead of growing the server's memory (a request
 * may be up to 1 MiB). A client's burst still shares the store's group commits: it keeps up to
 * 512 messages unanswered (lib/client/delivery.ts), in two requests of 256 at most in the
 * offline bench.
 */
const MAIL_SEND_IN_FLIGHT = 16;
/**
 * How long a `mail_send`'s recipient (the account, and that they and the sender are mutual
 * contacts) is taken as checked for the next ones on the same connection: a contact removed
 * during a burst may still get up to this much of it.
 */
const MAIL_CHECK_REUSE_MS = 1_000;
/**
 * A push of read receipts not acknowledged after this long is taken as lost: the next
 * confirm or lookup pushes them again.
 */
const RECEIPTS_UNANSWERED_MS = 10_000;
/**
 * The default of {@link ServerOptions.maxWriteQueue}: 8 MiB. What the server writes to a client
 * is replies (each at most a 1 MiB frame, one at a time per connection but for up to 16
 * `mail_send` answers of a few bytes) and small pushes (a presence change is about 80 bytes),
 * behind a kernel send buffer of up to 4 MiB: a client that reads never comes near, one that
 * stops is dropped after about 100,000 unread pushes. 15,000 connections could each hold it;
 * only ones that stopped reading do.
 */
export const DEFAULT_SERVER_WRITE_QUEUE = 8 * MIB;
/** Log lines for clients dropped as slow readers: a burst of this many, then one per minute. */
const SLOW_READERS_LOGGED = 10;
const SLOW_READER_LOG_MS = 60_000;
/** `error` frames a connection's client sends that are logged at most (the rest are not). */
const CLIENT_ERRORS_LOGGED = 3;
/** Bytes read ahead on a client's control connection (a request is a few hundred bytes). */
const CONTROL_READ_AHEAD = 1024;
/**
 * Connections the kernel holds for the server before it accepts them (Deno's default is 511;
 * Linux caps it at `net.core.somaxconn`, 4096 by default since 5.4). A herd of clients coming
 * back after a restart arrives faster than one accept per turn of the event loop: beyond the
 * queue the kernel drops their SYNs (sent again only after 1, 3, 7 s) and, worse, the last ACK
 * of handshakes it already answered, so a client believes it is connected, sends its hello
 * and waits its 10 s for nothing.
 */
const LISTEN_BACKLOG = 4096;
/** Hash requests allowed to wait; past this the server answers SERVER_BUSY. */
const HASH_QUEUE_LIMIT = 64;
/**
 * The longest wait for a hashing slot the server lets a signup or login start: a client waits
 * {@link HASH_REQUEST_TIMEOUT_MS} for its answer, and one turned away at once with SERVER_BUSY
 * knows for sure that nothing was done.
 */
const HASH_WAIT_LIMIT_MS = HASH_REQUEST_TIMEOUT_MS / 2;
/**
 * How long the ids of read mail are kept: a sender's client resends what it had no answer for
 * (the server may have stored it and died before answering), and a resend of mail read in the
 * meantime must not be stored and shown again. As long as a session token lives.
 */
const READ_MAIL_KEPT_MS = 30 * 24 * 3600_000;
/** How often ids of read mail past that age are forgotten. */
const FORGET_READ_MAIL_EVERY_MS = 3600_000;
/** A session ends this long after its password login (resumes do not extend it). */
const SESSION_MAX_AGE_MS = 30 * 24 * 3600_000;
/**
 * A token replaced at a resume still works this long (unless its successor was used): the
 * welcome carrying the new one may have been lost with the connection.
 */
const SESSION_GRACE_MS = 2 * 60_000;

function tokenHash(token: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(token).digest());
}

class Reply extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

export class ConfabServer implements AsyncDisposable {
  readonly store: ServerStore;
  readonly addr: Deno.NetAddr;
  readonly #listener: Deno.TcpListener;
  readonly #probeListener: Deno.TcpListener | undefined;
  readonly #relay: Relay;
  readonly #key: KeyPair;
  readonly #tickets: TicketBox;
  readonly #perAddress = new Map<string, number>();
  readonly #opts:
    & Required<
      Omit<
        ServerOptions,
        | "host"
        | "port"
        | "storeUrl"
        | "storeConnections"
        | "relay"
        | "probePort"
        | "keyFile"
        | "passwordCost"
        | "relayAddress"
      >
    >
    & { kdf: string; relayAddress?: { host: string; port: number } };
  readonly #conns = new Set<FramedConnection<ClientMessage>>();
  readonly #online = new Map<string, Session>();
  readonly #userThrottle = new LoginThrottle();
  readonly #addrThrottle = new LoginThrottle({ freeFailures: 20 });
  readonly #signupLimit: RateLimit | undefined;
  #hashing = 0;
  readonly #hashQueue: (() => void)[] = [];
  /** How long a hash takes here now (moving average, ms): a busy machine takes longer. */
  #hashMs = 0;
  #acceptLoop: Promise<void>;
  #probeLoop: Promise<void>;
  #serving = new Set<Promise<void>>();
  #closing: Promise<void> | undefined;
  readonly #sweep: ReturnType<typeof setInterval>;
  #forgotReadMailAt = Date.now();
  readonly #resumeSlots = new Slots(RESUME_CONCURRENCY);
  readonly #admission = new Admission();
  readonly #resumes = new GroupCommit<Resumption, Resumed | undefined>(
    (batch) => this.store.resumeMany(batch),
    { maxBatch: RESUME_BATCH, concurrency: RESUME_BATCHES },
  );
  readonly #detaches = new GroupCommit<Place, boolean>(
    (batch) => this.store.detachMany(batch, batch[0]!.at),
    { maxBatch: DETACH_BATCH, concurrency: DETACH_BATCHES },
  );
  /**
   * Detaches that failed, by attach id, tried again until they succeed. At most one a session:
   * none begins while the database is away (an attach fails then), so they are bounded by the
   * sessions held when it went.
   */
  readonly #undetached = new Map<string, Place>();
  #detachRetry: {
    timer?: ReturnType<typeof setTimeout>;
    /** The try under way, which close() waits for before its own last one. */
    running?: Promise<void>;
    ms: number;
  } = { ms: DETACH_RETRY_FIRST_MS };
  readonly #events: StoreEvent[] = [];
  #eventsRunning = 0;
  /** Log lines for slow readers (see {@link SLOW_READERS_LOGGED}), and the ones left out. */
  readonly #slowReaderLog = new RateLimit({
    capacity: SLOW_READERS_LOGGED,
    intervalMs: SLOW_READER_LOG_MS,
  });
  #slowReadersUnlogged = 0;

  private constructor(
    listeners: { main: Deno.TcpListener; probe: Deno.TcpListener | undefined },
    store: ServerStore,
    key: KeyPair,
    options: ServerOptions,
    tickets: TicketBox,
  ) {
    const listener = listeners.main;
    this.#listener = listener;
    this.#probeListener = listeners.probe;
    this.#key = key;
    this.#tickets = tickets;
    this.addr = listener.addr;
    this.store = store;
    this.#opts = {
      dataDir: options.dataDir,
      maxConnections: options.maxConnections ?? 15_000,
      maxPerAddress: options.maxPerAddress ?? 1000,
      helloTimeoutMs: options.helloTimeoutMs ?? 10_000,
      loginTimeoutMs: options.loginTimeoutMs ?? 60_000,
      sessionMaxAgeMs: options.sessionMaxAgeMs ?? SESSION_MAX_AGE_MS,
      maxPending: options.maxPending ?? 10_000,
      maxPendingBytes: options.maxPendingBytes ?? 256 * MIB,
      maxPendingPerSender: options.maxPendingPerSender ?? 1000,
      maxPendingBytesPerSender: options.maxPendingBytesPerSender ?? 32 * MIB,
      kdf: kdfOf(options.passwordCost ?? DEFAULT_PASSWORD_COST),
      maxSignupsPerHour: options.maxSignupsPerHour ?? 20,
      clientTimeoutMs: options.clientTimeoutMs ?? 75_000,
      maxWriteQueue: options.maxWriteQueue ?? DEFAULT_SERVER_WRITE_QUEUE,
      log: options.log ?? (() => {}),
      relayAddress: options.relayAddress,
    };
    this.#signupLimit = this.#opts.maxSignupsPerHour > 0
      ? new RateLimit({
        capacity: this.#opts.maxSignupsPerHour,
        intervalMs: 3600_000 / this.#opts.maxSignupsPerHour,
      })
      : undefined;
    this.#relay = new Relay({ ...DEFAULT_RELAY_LIMITS, ...options.relay }, {
      notify: (userKey, notice) => {
        const session = this.#online.get(userKey);
        if (session) {
          session.fc.send({ type: "relay_notice", ...notice }).catch(() => {});
        } else if (this.store.shared) {
          // Relayed here for a user connected to another instance.
          this.store.publish({ kind: "relay_notice", to: userKey, ...notice }).catch(() => {});
        }
      },
      log: (line) => this.#opts.log(line),
      usage: this.store,
    });
    this.#acceptLoop = this.#accept(listener);
    this.#probeLoop = listeners.probe ? this.#accept(listeners.probe) : Promise.resolve();
    // Clients ping every few seconds; one silent for longer is frozen or cut off. One sweep
    // over all connections, rather than a timer each: a server holds thousands.
    this.#sweep = setInterval(() => this.#dropSilent(), this.#opts.clientTimeoutMs / 4);
  }

  #dropSilent(now = Date.now()): void {
    for (const fc of this.#conns) {
      if (now - fc.lastReceived > this.#opts.clientTimeoutMs) {
        void fc.close(new SilentPeerError(`no ping for ${this.#opts.clientTimeoutMs / 1000} s`));
      }
    }
    if (now - this.#forgotReadMailAt > FORGET_READ_MAIL_EVERY_MS) {
      this.#forgotReadMailAt = now;
      this.store.forgetReadMail(now - READ_MAIL_KEPT_MS).catch((error) => {
        this.#opts.log(`cannot forget old read mail: ${asError(error).message}`);
      });
      this.store.purgeSessions(this.#sessionAges(now)).catch((error) => {
        this.#opts.log(`cannot purge expired sessions: ${asError(error).message}`);
      });
    }
  }

  #sessionAges(now = Date.now()) {
    return { maxAgeMs: this.#opts.sessionMaxAgeMs, graceMs: SESSION_GRACE_MS, now };
  }

  /**
   * Opens the data dir (creating the server key on first start) and starts listening.
   * @throws {Deno.errors.AddrInUse} when the port is taken.
   */
  static async start(options: ServerOptions): Promise<ConfabServer> {
    // The server hashes passwords with node:crypto's scrypt and so loads it anyway: from now on
    // long frames and hashes go through it too (node_crypto.ts).
    await loadNodeCrypto();
    const store = await openStore({
      dataDir: options.dataDir,
      url: options.storeUrl,
      connections: options.storeConnections,
    });
    try {
      const key = await loadOrCreateServerKey(options.dataDir, options.keyFile);
      await store.forgetReadMail(Date.now() - READ_MAIL_KEPT_MS);
      await store.purgeSessions({
        maxAgeMs: options.sessionMaxAgeMs ?? SESSION_MAX_AGE_MS,
        graceMs: SESSION_GRACE_MS,
      });
      const listener = Deno.listen({
        hostname: options.host ?? "127.0.0.1",
        port: options.port ?? 4242,
        transport: "tcp",
        tcpBacklog: LISTEN_BACKLOG,
      });
      const probePort = options.probePort ??
        ((options.port ?? 4242) === 0 || listener.addr.port === 65535 ? 0 : listener.addr.port + 1);
      let probe: Deno.TcpListener | undefined;
      if (probePort >= 0) {
        try {
          probe = Deno.listen({ hostname: options.host ?? "127.0.0.1", port: probePort });
        } catch (error) {
          // Without it the server still works; clients just cannot tell a symmetric NAT.
          options.log?.(
            `cannot listen on probe port ${probePort}: ${asError(error).message}; ` +
              `clients cannot detect symmetric NATs (pick one with --probe-port N)`,
          );
        }
      }
      const tickets = await TicketBox.forServerKey(key);
      const server = new ConfabServer({ main: listener, probe }, store, key, options, tickets);
      try {
        await server.#runStore();
      } catch (error) {
        await server.close();
        throw error;
      }
      return server;
    } catch (error) {
      await store.close();
      throw error;
    }
  }

  /**
   * Joins the store as an instance: events (pushes caused on any instance) come to
   * `#onEvent`; registry rows left open by instances that died are closed.
   */
  #runStore(): Promise<void> {
    return this.store.run({
      name: `${this.addr.hostname}:${this.addr.port}`,
      onEvent: (event) => this.#queueEvent(event),
      onLeaseLost: () => {
        for (const session of this.#online.values()) {
          void session.fc.fail("SERVER_BUSY", "this server lost its database for a while");
        }
      },
      log: this.#opts.log,
    });
  }

  /**
   * Events are passed on a few at a time: a burst (thousands of users of a dead instance taken
   * out at once) must not crowd out the requests waiting for the same database connections.
   */
  #queueEvent(event: StoreEvent): void {
    // Closing: every connection is told so and ends; nobody is left to tell.
    if (this.#closing) return;
    this.#events.push(event);
    while (this.#eventsRunning < EVENT_CONCURRENCY && this.#events.length > 0) {
      this.#eventsRunning++;
      void (async () => {
        for (let next; (next = this.#events.shift()) !== undefined;) {
          await this.#onEvent(next).catch((error) => {
            this.#opts.log(`cannot pass on a ${next!.kind} event: ${asError(error).message}`);
          });
        }
      })().finally(() => this.#eventsRunning--);
    }
  }

  /** Passes on what happened (here or on another instance) to the users held here. */
  async #onEvent(event: StoreEvent): Promise<void> {
    switch (event.kind) {
      case "mail": {
        const recipient = this.#online.get(event.to);
        if (!recipient) return;
        const sender = await this.store.getUser(event.from);
        if (!sender) return;
        const count = await this.store.countMail(recipient.user, sender.name);
        recipient.fc.send({ type: "mail_notice", from: sender.name, count }).catch(() => {});
        return;
      }
      case "receipts":
        return await this.#pushReceipts(event.to);
      case "presence": {
        // Gone from another instance: pairings waiting for them here end now.
        if (!event.online) this.#relay.cancelFor(event.user);
        const watchers = (event.watchers ?? await this.store.listWatchers(event.user))
          .map((key) => this.#online.get(key))
          .filter((session) => session !== undefined);
        if (watchers.length === 0) return;
        const user = event.name ?? (await this.store.getUser(event.user))?.name ?? event.user;
        for (const session of watchers) {
          session.fc.send({ type: "presence", user, online: event.online }).catch(() => {});
        }
        return;
      }
      case "kick": {
        const session = this.#online.get(event.user);
        if (!session || session.attach === event.attach) return;
        // Only the connection replaced: one that took its place here after (a login newer than
        // the kick, which reached this instance late) stays.
        if (event.replaced !== undefined && session.attach !== event.replaced) return;
        // One place at a time: the newer login wins (the old link may be half-open).
        this.#online.delete(session.key);
        void session.fc.fail("ALREADY_LOGGED_IN", "you logged in again from another place");
        return;
      }
      case "check":
        return this.#checkAlive(event.user, event.reporter);
      case "relay_offer": {
        const { from, token, host, port } = event;
        this.#online.get(event.to)?.fc.send({ type: "relay_offer", from, token, host, port })
          .catch(() => {});
        return;
      }
      case "relay_notice": {
        const { peer, limit, message } = event;
        this.#online.get(event.to)?.fc.send({ type: "relay_notice", peer, limit, message })
          .catch(() => {});
        return;
      }
      case "contact":
        this.#online.get(event.to)?.fc.send({
          type: "contact_update",
          user: event.from,
          state: event.state,
        }).catch(() => {});
        return;
    }
  }

  /** The server's static public key, which clients pin. */
  get publicKey(): Uint8Array<ArrayBuffer> {
    return this.#key.publicKey;
  }

  /** The second port clients ask their address on (NAT detection), if it is open. */
  get probePort(): number | undefined {
    return this.#probeListener?.addr.port;
  }

  /** Links relayed now. */
  relayedLinks(): RelayedLinkInfo[] {
    return this.#relay.links();
  }

  /** Users connected to this instance now, newest login first. */
  online(): OnlineUser[] {
    return [...this.#online.values()]
      .map(({ user, host, peerPort, loginAt }) => ({ user, host, peerPort, loginAt }))
      .sort((a, b) => b.loginAt - a.loginAt);
  }

  get connectionCount(): number {
    return this.#conns.size;
  }

  async #accept(listener: Deno.TcpListener): Promise<void> {
    let backoff = 10;
    while (!this.#closing) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
        backoff = 10;
      } catch (error) {
        if (this.#closing || error instanceof Deno.errors.BadResource) break;
        // EMFILE and friends: wait a little and keep accepting; never let one failure stop us.
        this.#opts.log(`accept failed: ${asError(error).message}; retrying in ${backoff} ms`);
        await delay(backoff);
        backoff = Math.min(backoff * 2, 1000);
        continue;
      }
      const host = conn.remoteAddr.hostname;
      const fromHost = this.#perAddress.get(host) ?? 0;
      if (this.#conns.size >= this.#opts.maxConnections) {
        this.#refuse(conn, "server is at its connection limit; try again later");
        continue;
      }
      if (this.#opts.maxPerAddress > 0 && fromHost >= this.#opts.maxPerAddress) {
        this.#refuse(conn, `too many connections from ${host}; close some and try again`);
        continue;
      }
      const serving = this.#serve(conn).catch((error) => {
        this.#opts.log(`connection error: ${asError(error).message}`);
      });
      this.#serving.add(serving);
      void serving.finally(() => this.#serving.delete(serving));
    }
  }

  #refuse(conn: Deno.TcpConn, message: string): void {
    const frame = encodeFrame(encodeMessage({ type: "error", code: "SERVER_BUSY", message }));
    void writeAll(conn, frame).catch(() => {}).finally(() => {
      try {
        conn.close();
      } catch { /* already closed */ }
    });
  }

  async #serve(conn: Deno.TcpConn): Promise<void> {
    const fc = new FramedConnection<ClientMessage>(conn, {
      schema: ClientToServer,
      replyTypes: ["pong"],
      // A relay_join turns the connection into a relay leg: not a byte more is read as frames.
      stopReadingAfter: ["relay_join"],
      // Requests are small; at 15,000 connections each KiB here is 15 MiB.
      readAhead: CONTROL_READ_AHEAD,
      maxWriteQueue: this.#opts.maxWriteQueue,
    });
    this.#conns.add(fc);
    let loginTimer: ReturnType<typeof setTimeout> | undefined;
    const state: ConnState = {
      mailOrder: Promise.resolve(),
      mailUnanswered: 0,
      errorsLogged: 0,
      mailRefusedAt: -Infinity,
      session: undefined,
      host: conn.remoteAddr.hostname,
      port: conn.remoteAddr.port,
      staticKey: "",
      armLoginTimer: () => {
        clearTimeout(loginTimer);
        loginTimer = setTimeout(() => {
          if (!state.session) {
            void fc.fail("TIMEOUT", `not logged in within ${this.#opts.loginTimeoutMs / 1000}s`);
          }
        }, this.#opts.loginTimeoutMs);
      },
    };
    this.#perAddress.set(state.host, (this.#perAddress.get(state.host) ?? 0) + 1);
    try {
      // A few handshakes at a time; the others wait their turn (see Admission). One whose
      // client gave up meanwhile is just closed.
      if (!await this.#admission.enter(fc.closed)) return;
      let noise;
      try {
        noise = await openSecureChannel(fc, {
          role: "server",
          expectRole: "client",
          initiator: false,
          staticKeyPair: this.#key,
          timeoutMs: this.#opts.helloTimeoutMs,
          // A client coming back with a ticket of ours: the client key it was issued to.
          openTicket: (ticket) => {
            const opened = this.#tickets.open(ticket);
            state.ticketIssuedAt = opened?.issuedAt;
            return opened && { psk: opened.psk, clientKey: fromBase64Url(opened.clientKey) };
          },
        });
      } finally {
        this.#admission.leave();
      }
      state.staticKey = toBase64Url(noise.remoteStaticKey!);
      state.armLoginTimer();
      fc.setHandler((message) => this.#handle(fc, state, message));
      const reason = await fc.closed;
      if (reason instanceof SlowReaderError) this.#loggedSlowReader(state, reason);
    } catch {
      // A bad hello or a silent connection: nothing to clean up beyond closing.
    } finally {
      clearTimeout(loginTimer);
      await fc.close();
      this.#conns.delete(fc);
      // A relay leg's socket lives on in its relayed link: counted from its address until then.
      const counted = () => {
        const left = (this.#perAddress.get(state.host) ?? 1) - 1;
        if (left > 0) this.#perAddress.set(state.host, left);
        else this.#perAddress.delete(state.host);
      };
      if (state.relayLink) void state.relayLink.finally(counted);
      else counted();
      state.ended = { session: state.session };
      // While the server closes, close() takes every user out in one commit.
      if (state.session && !this.#closing) await this.#endSession(state.session, Date.now());
    }
  }

  /** Logs a client dropped for not reading, rate-limited: a flood of them is one line a minute. */
  #loggedSlowReader(state: ConnState, reason: SlowReaderError): void {
    if (this.#slowReaderLog.take("all") > 0) {
      this.#slowReadersUnlogged++;
      return;
    }
    const who = state.session ? `${state.session.user} (${state.host})` : state.host;
    const more = this.#slowReadersUnlogged > 0
      ? `; ${this.#slowReadersUnlogged} more since the last such line`
      : "";
    this.#slowReadersUnlogged = 0;
    this.#opts.log(
      `dropped ${who}: it stopped reading, ${reason.limit} bytes were waiting to be written ` +
        `to it (--max-write-queue)${more}`,
    );
  }

  async #handle(
    fc: FramedConnection<ClientMessage>,
    state: ConnState,
    message: ClientMessage,
  ): Promise<void> {
    try {
      await this.#dispatch(fc, state, message);
    } catch (error) {
      await this.#replyError(fc, message, error);
    }
  }

  /** Answers a request that failed: its Reply, or an internal error (logged). */
  async #replyError(
    fc: FramedConnection<ClientMessage>,
    message: ClientMessage,
    error: unknown,
  ): Promise<void> {
    const id = "id" in message ? message.id : undefined;
    if (error instanceof Reply || error instanceof RelayRefused) {
      await fc.send({ type: "error", id, code: error.code, message: error.message })
        .catch(() => {});
      // A refused relay leg has stopped reading: it can be of no further use.
      if (message.type === "relay_join") await fc.close();
      return;
    }
    if (isStoreUnavailable(error)) {
      this.#opts.log(
        `${message.type} failed: the database is unreachable (${asError(error).message})`,
      );
      await fc.send({
        type: "error",
        id,
        code: "SERVER_BUSY",
        message: "the server cannot reach its database at the moment; try again shortly",
      }).catch(() => {});
      return;
    }
    // The client left while its answer was being made or written: nobody is there to tell.
    if (error instanceof ConnectionClosedError && fc.isClosed) return;
    this.#opts.log(`internal error on ${message.type}: ${asError(error).stack}`);
    await fc.send({ type: "error", id, code: "INTERNAL", message: "internal server error" })
      .catch(() => {});
  }

  async #dispatch(
    fc: FramedConnection<ClientMessage>,
    state: ConnState,
    m: ClientMessage,
  ): Promise<void> {
    switch (m.type) {
      case "ping": // answered by the connection itself (FramedConnection)
      case "pong":
        return;
      case "error":
        // A few a connection: anyone may send them, logged in or not, as fast as they like.
        if (state.errorsLogged < CLIENT_ERRORS_LOGGED) {
          this.#opts.log(`client ${state.host} reported: ${m.code} ${m.message}`);
        } else if (state.errorsLogged === CLIENT_ERRORS_LOGGED) {
          this.#opts.log(
            `client ${state.host} reported more errors: the rest on this connection are not logged`,
          );
        }
        state.errorsLogged = Math.min(state.errorsLogged + 1, CLIENT_ERRORS_LOGGED + 1);
        return;
      case "hello":
        throw new Reply("BAD_MESSAGE", "hello was already exchanged");
      case "signup":
        return await this.#signup(fc, state, m);
      case "login":
        return await this.#login(fc, state, m);
      case "resume":
        // A few at a time: thousands re-attaching at once (their instance died) would each
        // wait behind all the others' queries and time out together, over and over.
        return await this.#resumeSlots.run(async () => {
          // Its client gave up while it waited (and will try again): no work for nobody.
          if (fc.isClosed) return;
          await this.#resume(fc, state, m);
        });
      case "observe":
        return await fc.send({
          type: "observed",
          id: m.id,
          host: state.host,
          port: state.port,
          ...(this.probePort ? { probePort: this.probePort } : {}),
        });
      case "relay_join":
        if (state.session) {
          throw new Reply("BAD_MESSAGE", "join a relay on a fresh connection, not a logged-in one");
        }
        return await this.#relay.join(m.token, state.staticKey, {
          fc,
          requestId: m.id,
          handedOver: (linkEnded) => state.relayLink = linkEnded,
        });
    }
    const session = state.session;
    if (!session) throw new Reply("NOT_LOGGED_IN", "log in first");
    switch (m.type) {
      case "logout": {
        // Every token of the user: the current one and one it may have replaced lately. Should
        // that fail (SERVER_BUSY), the session goes on, and the client may log out again.
        await this.store.deleteUserSessions(session.user);
        state.session = undefined;
        state.armLoginTimer(); // a connection without a session may not linger
        // Its detach, should it fail, is tried again until done (see #detach).
        await this.#endSession(session, Date.now());
        return await fc.send({ type: "ok", id: m.id });
      }
      case "password_change":
        return await this.#changePassword(fc, state, session, m);
      case "lookup":
        return await this.#lookup(fc, session, m);
      case "contacts":
        return await this.#contactList(fc, session, m.id);
      case "contact_add":
        return await this.#contactAdd(fc, session, m);
      case "contact_remove":
        return await this.#contactRemove(fc, session, m);
      case "mail_send": {
        // Not awaited: the connection goes on with its next message while this one waits
        // for the store's next group commit, so a burst of mail shares commits. The messages
        // still reach the store in the order they came (see #mailSend). Up to a point: past
        // MAIL_SEND_IN_FLIGHT unanswered, the next waits here (and so does the connection).
        while (state.mailUnanswered >= MAIL_SEND_IN_FLIGHT) {
          await new Promise<void>((resolve) => state.mailRoom = resolve);
        }
        // Gone while it waited: nobody to answer (its client sends it again).
        if (fc.isClosed) return;
        state.mailUnanswered++;
        const previous = state.mailOrder;
        const handed = Promise.withResolvers<void>();
        state.mailOrder = handed.promise;
        void this.#mailSend(fc, session, m, { previous, handed: handed.resolve, state })
          .catch((error) => {
            if (isStoreUnavailable(error)) state.mailRefusedAt = Date.now();
            return this.#replyError(fc, m, error);
          })
          .finally(() => {
            handed.resolve();
            state.mailUnanswered--;
            state.mailRoom?.();
            state.mailRoom = undefined;
          });
        return;
      }
      case "hanging":
        return await fc.send({
          type: "hanging_list",
          id: m.id,
          entries: (await this.store.mailbox(session.user)).slice(0, MAX_MAILBOX_ENTRIES),
        });
      case "show":
        return await this.#show(fc, session, m);
      case "mail_confirm": {
        const sender = await this.store.getUser(m.from);
        if (sender) {
          const done = await this.store.confirmMail(
            session.user,
            sender.name,
            m.msgIds,
            Date.now(),
            new Set(m.rejected ?? []),
            signedReads(m),
          );
          if (done.length > 0) await this.#pushReceipts(sender.nameKey);
        }
        return await fc.send({ type: "ok", id: m.id });
      }
      case "receipts_ack":
        await this.store.deleteReceipts(session.user, m.msgIds);
        session.receipts = undefined; // the push is answered: the next may go
        await this.#pushReceipts(session.key);
        return await fc.send({ type: "ok", id: m.id });
      case "report_unreachable":
        // The user may be held by another instance: that one checks.
        await this.store.publish({ kind: "check", user: nameKey(m.user), reporter: session.user });
        return await fc.send({ type: "ok", id: m.id });
      case "relay_open":
        return await this.#relayOpen(fc, session, m);
    }
  }

  /**
   * My contacts: the mutual ones (with who is online: only they may know), the requests I made
   * and those made to me that wait for an answer.
   */
  async #contactList(
    fc: FramedConnection<ClientMessage>,
    session: Session,
    id: number,
  ): Promise<void> {
    const mine = await this.store.listContacts(session.user);
    const mutual = new Set(await this.store.listWatchers(session.user));
    const contacts = mine.filter((user) => mutual.has(nameKey(user)));
    const online = await this.store.onlineAmong(contacts);
    return await fc.send({
      type: "contact_list",
      id,
      contacts: contacts.map((user) => ({ user, online: online.has(nameKey(user)) })),
      requested: mine.filter((user) => !mutual.has(nameKey(user))),
      requests: await this.store.listContactRequests(session.user, MAX_CONTACTS),
    });
  }

  /**
   * `contacts add`: a request to `m.user`, or the answer to theirs (then we are mutual
   * contacts). The other side is told at once, on whichever instance holds them.
   */
  async #contactAdd(
    fc: FramedConnection<ClientMessage>,
    session: Session,
    m: Extract<ClientMessage, { type: "contact_add" }>,
  ): Promise<void> {
    const target = await this.store.getUser(m.user);
    if (!target) throw new Reply("NO_SUCH_USER", `there is no user named ${m.user}`);
    if (target.nameKey === session.key) {
      throw new Reply("BAD_MESSAGE", "you cannot add yourself as a contact");
    }
    if (
      !await this.store.isContact(session.user, target.name) &&
      await this.store.countContacts(session.user) >= MAX_CONTACTS
    ) {
      throw new Reply("BAD_MESSAGE", `contact list is full (${MAX_CONTACTS})`);
    }
    const added = await this.store.addContact(session.user, target.name);
    // Whether they asked me is read after my own row is in. Of two users who add each other
    // at the same moment, the later reader then sees the other's row: one of them learns
    // "mutual" and tells the other "accepted". Read before, both could miss each other's rows,
    // and both would be told of a mere "request".
    const asked = await this.store.isContact(target.name, session.user);
    if (added) {
      await this.store.publish({
        kind: "contact",
        to: target.nameKey,
        from: session.user,
        state: asked ? "accepted" : "request",
      });
    }
    return await fc.send({
      type: "contact_result",
      id: m.id,
      user: target.name,
      state: asked ? "mutual" : "requested",
    });
  }

  /**
   * `contacts remove`: ends a contact both ways, declines a request made to me, or withdraws
   * one I made. The other side is told of the first two.
   */
  async #contactRemove(
    fc: FramedConnection<ClientMessage>,
    session: Session,
    m: Extract<ClientMessage, { type: "contact_remove" }>,
  ): Promise<void> {
    const notContact = () => new Reply("NOT_A_CONTACT", `${m.user} is not in your contacts`);
    const target = await this.store.getUser(m.user);
    if (!target) throw notContact();
    // What there was is what the deletes removed, not what was read before them: the other
    // side may answer in between (a request of mine accepted: both rows are there by now, and
    // they were told "mutual", so they must hear that it is over).
    const mine = await this.store.removeContact(session.user, target.name);
    const theirs = await this.store.removeContact(target.name, session.user);
    if (!mine && !theirs) throw notContact();
    const state = mine && theirs ? "removed" : theirs ? "declined" : "withdrawn";
    if (state !== "withdrawn") {
      await this.store.publish({ kind: "contact", to: target.nameKey, from: session.user, state });
    }
    return await fc.send({ type: "contact_result", id: m.id, user: target.name, state });
  }

  /**
   * Pairs `session`'s user with `m.user` through the relay: only mutual contacts, both
   * online. The other side is offered the same token on its control connection.
   */
  async #relayOpen(
    fc: FramedConnection<ClientMessage>,
    session: Session,
    m: Extract<ClientMessage, { type: "relay_open" }>,
  ): Promise<void> {
    const target = await this.store.getUser(m.user);
    if (!target) throw new Reply("NO_SUCH_USER", `there is no user named ${m.user}`);
    if (target.nameKey === session.key) {
      throw new Reply("BAD_MESSAGE", "you cannot relay to yourself");
    }
    if (!await this.store.isMutual(session.user, target.name)) {
      throw new Reply(
        "NOT_A_CONTACT",
        `the server relays only between mutual contacts; ${target.name} has not added you`,
      );
    }
    // Connected here, or to another instance of the cluster (then its leg comes here). Their
    // going offline while the store answers must not leave a pairing waiting for them.
    const me = { user: session.user, key: session.key, staticKey: session.staticKey };
    const watch = this.#relay.watch(me, { user: target.name, key: target.nameKey });
    const live = this.#online.get(target.nameKey);
    let token: string;
    try {
      const elsewhere = live ? undefined : await this.store.presenceOf(target.name);
      const other = live ?? (elsewhere && { ...elsewhere, key: target.nameKey });
      if (!other) throw new Reply("USER_OFFLINE", `${target.name} is offline`);
      token = await this.#relay.issue(
        me,
        { user: other.user, key: other.key, staticKey: other.staticKey },
        watch,
      );
    } finally {
      watch.end();
    }
    if (live) {
      live.fc.send({ type: "relay_offer", from: session.user, token }).catch(() => {});
    } else {
      // This instance pairs the legs: the other one joins at the address the asking client
      // reached it at (or the operator's --relay-address).
      const here = this.#opts.relayAddress ?? {
        host: fc.transport.localAddr.hostname,
        port: fc.transport.localAddr.port,
      };
      await this.store.publish({
        kind: "relay_offer",
        to: target.nameKey,
        from: session.user,
        token,
        ...here,
      });
    }
    await fc.send({ type: "relay_token", id: m.id, token });
  }

  /**
   * Stores the messages of one `mail_send` in the order given, in the store's next group
   * commit (with whatever else arrived meanwhile), and answers once that commit is done: how
   * many are stored, and each refused one with its reason.
   */
  async #mailSend(
    fc: FramedConnection<ClientMessage>,
    session: Session,
    m: Extract<ClientMessage, { type: "mail_send" }>,
    order: { previous: Promise<void>; handed: () => void; state: ConnState },
  ): Promise<void> {
    const target = await this.#mailTarget(session, m.to, order.state);
    await order.previous; // the one before it on this connection is in the store's queue
    if (Date.now() - order.state.mailRefusedAt < MAIL_REFUSED_MS) {
      // Sent before the client heard that an earlier one failed: it must not overtake it.
      throw new Reply("SERVER_BUSY", "an earlier message could not be stored; try again shortly");
    }
    const limits = {
      messages: this.#opts.maxPending,
      bytes: this.#opts.maxPendingBytes,
      senderMessages: this.#opts.maxPendingPerSender,
      senderBytes: this.#opts.maxPendingBytesPerSender,
    };
    const now = Date.now();
    // All handed over in this turn: one commit holds the whole burst, in this order.
    const outcomes = m.messages.map((mail) =>
      this.store.storeMail(
        {
          recipient: target.name,
          sender: session.user,
          msgId: mail.msgId,
          ts: mail.ts,
          body: mail.sealed,
        },
        limits,
        now,
      ).then((result) => ({ result }), (error: unknown) => ({ error }))
    );
    order.handed();
    const refused: { msgId: string; code: MailRefusal; message: string }[] = [];
    let stored = 0;
    let fresh = false;
    for (const [i, outcome] of (await Promise.all(outcomes)).entries()) {
      const msgId = m.messages[i]!.msgId;
      if ("error" in outcome) {
        refused.push({ msgId, ...this.#mailError(outcome.error, order.state) });
      } else if (outcome.result === "full") {
        refused.push({
          msgId,
          code: "MAILBOX_FULL",
          message: `${target.name}'s mailbox is full (at most ${this.#opts.maxPending} messages ` +
            `or ${mib(this.#opts.maxPendingBytes)} wait); try again once they have read some`,
        });
      } else if (outcome.result === "quota") {
        refused.push({
          msgId,
          code: "QUOTA",
          message: `you have as much waiting for ${target.name} as one sender may (` +
            `${this.#opts.maxPendingPerSender} messages or ` +
            `${mib(this.#opts.maxPendingBytesPerSender)}); try again once they have read some`,
        });
      } else {
        stored++;
        fresh ||= outcome.result === "stored";
      }
    }
    if (fresh && Deno.env.get("CONFAB_FAULT") === "crash-after-mail-store") {
      Deno.kill(Deno.pid, "SIGKILL"); // tests: die between the commit and the answer
    }
    // A stored message is an event: the instance holding the recipient sends the notice.
    return await fc.send({
      type: "mail_stored",
      id: m.id,
      stored,
      ...(refused.length > 0 ? { refused } : {}),
    });
  }

  /**
   * What to tell the sender of a message the store failed to take: the database out of reach
   * (the connection's next `mail_send`s are refused for a moment, so none overtakes it), or an
   * internal error (logged).
   */
  #mailError(error: unknown, state: ConnState): { code: MailRefusal; message: string } {
    if (isStoreUnavailable(error)) {
      state.mailRefusedAt = Date.now();
      this.#opts.log(`mail_send failed: the database is unreachable (${asError(error).message})`);
      return {
        code: "SERVER_BUSY",
        message: "the server cannot reach its database at the moment; try again shortly",
      };
    }
    this.#opts.log(`internal error on mail_send: ${asError(error).stack}`);
    return { code: "INTERNAL", message: "internal server error" };
  }

  /** The recipient of a `mail_send`: an account that is a mutual contact of the sender. */
  async #mailTarget(session: Session, to: string, state: ConnState): Promise<UserRecord> {
    const seen = state.mailTo;
    const now = Date.now();
    if (
      seen?.session === session && seen.name === nameKey(to) && now - seen.at < MAIL_CHECK_REUSE_MS
    ) {
      return seen.target;
    }
    const target = await this.store.getUser(to);
    if (!target) throw new Reply("NO_SUCH_USER", `there is no user named ${to}`);
    // Only a mutual contact may leave mail: a stranger cannot fill anyone's mailbox.
    if (!await this.store.isMutual(session.user, target.name)) {
      throw new Reply(
        "NOT_A_CONTACT",
        `${target.name} has not accepted you as a contact; nothing was stored ` +
          `(contacts add ${target.name} sends a request)`,
      );
    }
    state.mailTo = { session, name: target.nameKey, target, at: now };
    return target;
  }

  async #show(
    fc: FramedConnection<ClientMessage>,
    session: Session,
    m: Extract<ClientMessage, { type: "show" }>,
  ): Promise<void> {
    const sender = await this.store.getUser(m.from);
    if (!sender) throw new Reply("NO_SUCH_USER", `there is no user named ${m.from}`);
    const pending = await this.store.pendingMail(
      session.user,
      sender.name,
      MAX_MAIL_BATCH + 1,
      m.after,
    );
    const batch: { msgId: string; ts: number; sealed: string }[] = [];
    let size = 0;
    for (const p of pending.slice(0, MAX_MAIL_BATCH)) {
      size += p.body.length;
      if (batch.length > 0 && size > MAX_MAIL_BATCH_TEXT) break;
      batch.push({ msgId: p.msgId, ts: p.ts, sealed: p.body });
    }
    return await fc.send({
      type: "mail_batch",
      id: m.id,
      from: sender.name,
      messages: batch,
      more: pending.length > batch.length,
    });
  }

  /**
   * Sends the read receipts (and notices of mail the reader's client refused) waiting for
   * `senderKey`, if that user is online. One push at a time per session: the next goes once the
   * client acknowledged it (`receipts_ack`), so receipts confirmed while one is on its way are
   * not pushed twice.
   */
  async #pushReceipts(senderKey: string, reader?: string): Promise<void> {
    const session = this.#online.get(senderKey);
    if (!session) return;
    const now = Date.now();
    if (session.receipts && now - session.receipts.at < RECEIPTS_UNANSWERED_MS) {
      session.receipts.again = true;
      return;
    }
    const push = { state: "looking" as "looking" | "sent", again: false, at: now };
    session.receipts = push;
    try {
      for (let filter = reader;; filter = undefined) {
        push.again = false;
        const items = await this.store.pendingReceipts(session.user, MAX_MAIL_BATCH, filter);
        if (items.length > 0) {
          session.fc.send(receiptsPush(items)).catch(() => {});
          push.state = "sent";
          return;
        }
        if (!push.again) return;
      }
    } finally {
      if (push.state === "looking" && session.receipts === push) session.receipts = undefined;
    }
  }

  /**
   * Someone could not open a direct link to `user`. Ask that user's control connection for a
   * pong; if none comes back in time, the client is gone: end its session (it is marked
   * offline and its logout time recorded). A live client stays, whatever the reporter says.
   */
  #checkAlive(user: string, reporter: string): void {
    const session = this.#online.get(nameKey(user));
    if (!session) return;
    session.fc.request({ type: "ping" }, { timeoutMs: 2000 }).catch(() => {
      if (this.#online.get(session.key) !== session) return;
      this.#opts.log(`${session.user} does not answer (reported by ${reporter}): offline`);
      void session.fc.close(new Error("did not answer a liveness check"));
    });
  }

  /** Runs a password hash with bounded concurrency, so a signup flood cannot starve logins. */
  async #withHashSlot<T>(work: () => Promise<T>): Promise<T> {
    if (this.#hashing >= HASH_CONCURRENCY) {
      // Turned away now rather than answered after the client gave up waiting.
      const waitMs = (this.#hashQueue.length + 1) * this.#hashMs / HASH_CONCURRENCY;
      if (this.#hashQueue.length >= HASH_QUEUE_LIMIT || waitMs > HASH_WAIT_LIMIT_MS) {
        throw new Reply("SERVER_BUSY", "server is busy; try again in a moment");
      }
      await new Promise<void>((resolve) => this.#hashQueue.push(resolve));
    } else {
      this.#hashing++;
    }
    const started = performance.now();
    try {
      return await work();
    } finally {
      const took = performance.now() - started;
      this.#hashMs = this.#hashMs === 0 ? took : 0.8 * this.#hashMs + 0.2 * took;
      const next = this.#hashQueue.shift();
      if (next) next(); // hand our slot on
      else this.#hashing--;
    }
  }

  #checkThrottle(userKey: string, host: string): void {
    const wait = Math.max(this.#userThrottle.waitFor(userKey), this.#addrThrottle.waitFor(host));
    if (wait > 0) {
      throw new Reply(
        "TOO_MANY_ATTEMPTS",
        `too many failed attempts; try again in ${Math.ceil(wait / 1000)} s`,
      );
    }
  }

  async #signup(
    fc: FramedConnection<ClientMessage>,
    state: ConnState,
    m: Extract<ClientMessage, { type: "signup" }>,
  ): Promise<void> {
    // The request first: nothing is said about the name to a request that is not a valid
    // signup. Keys must be strong; the mail key must be vouched for by the identity key.
    if (!isStrongPublicKey(m.publicKey)) {
      throw new Reply(
        "BAD_MESSAGE",
        "the identity key is not a valid Ed25519 public key (small order or not canonical); " +
          "make a new one",
      );
    }
    if (!await isStrongX25519Key(fromBase64Url(m.mailKey))) {
      throw new Reply("BAD_MESSAGE", "the mail key is not a valid X25519 public key");
    }
    if (!await verifySignature(m.publicKey, m.mailKeySig, mailKeyStatement(m.user, m.mailKey))) {
      throw new Reply("BAD_MESSAGE", "the mail key is not signed by the identity key");
    }
    this.#checkThrottle("", state.host);
    const wait = this.#signupLimit?.take(state.host) ?? 0;
    if (wait > 0) {
      throw new Reply(
        "TOO_MANY_ATTEMPTS",
        `too many signups from ${state.host}; try again in ${Math.ceil(wait / 60_000)} min`,
      );
    }
    const taken = new Reply("USER_EXISTS", `the name ${m.user} is taken; pick another`);
    const existing = await this.store.getUser(m.user);
    if (existing) {
      // The same signup again, its answer lost on the way (the client keeps the keys of an
      // unanswered signup): done already. One hash either way, so probing names is as slow
      // as signing up; with the account's keys it is a password guess, throttled as a login.
      const sameKeys = existing.publicKey === m.publicKey && existing.mailKey === m.mailKey;
      const key = nameKey(m.user);
      if (sameKeys) {
        this.#checkThrottle(key, state.host);
        this.#userThrottle.begin(key);
        this.#addrThrottle.begin(state.host);
      }
      let outcome: "ok" | "failed" | "cancelled" = "cancelled";
      try {
        const right = await this.#withHashSlot(() =>
          verifyPassword(m.password, sameKeys ? existing : undefined, this.#opts.kdf)
        );
        if (sameKeys) outcome = right ? "ok" : "failed";
      } finally {
        if (sameKeys) {
          this.#userThrottle.end(key, outcome);
          this.#addrThrottle.end(state.host, outcome === "ok" ? "cancelled" : outcome);
        }
      }
      if (outcome !== "ok") throw taken;
      await fc.send({ type: "ok", id: m.id });
      return;
    }
    const password = await this.#withHashSlot(() => hashPassword(m.password, this.#opts.kdf));
    const created = await this.store.createUser({
      name: m.user,
      ...password,
      publicKey: m.publicKey,
      mailKey: m.mailKey,
      mailKeySig: m.mailKeySig,
    });
    if (!created) throw taken;
    this.#opts.log(`signup: ${m.user} from ${state.host}`);
    await fc.send({ type: "ok", id: m.id });
  }

  async #login(
    fc: FramedConnection<ClientMessage>,
    state: ConnState,
    m: Extract<ClientMessage, { type: "login" }>,
  ): Promise<void> {
    if (state.session) {
      throw new Reply("ALREADY_LOGGED_IN", `already logged in as ${state.session.user}`);
    }
    const key = nameKey(m.user);
    const user = await this.#provePassword(m.user, state.host, m.password);
    if (!user) {
      // The same answer for an unknown user and a wrong password.
      throw new Reply("LOGIN_FAILED", "wrong username or password");
    }
    if (needsRehash(user, this.#opts.kdf)) await this.#rehash(user.name, m.password);
    if (fc.isClosed) {
      // The client gave up while the password was checked: its other sessions stay, and it is
      // not shown online on a connection that is gone.
      this.#opts.log(`login: ${user.name} from ${state.host}: the client left before it was done`);
      return;
    }
    const token = randomBytes(32).toString("base64url");
    const hash = tokenHash(token);
    // One session per user: tokens of earlier logins (another device, or one that logged out
    // while the server was away) end here. The new one works only from this client's key.
    await this.store.deleteUserSessions(user.name);
    await this.store.saveSession(hash, user.name, { clientKey: state.staticKey });
    const now = Date.now();
    const seq = await this.store.recordLogin(user.name, state.host, m.peerPort, now);
    await this.#startSession(state, {
      user: user.name,
      key,
      host: state.host,
      peerPort: m.peerPort,
      loginAt: now,
      fc,
      registrySeq: seq,
      tokenHash: hash,
      staticKey: state.staticKey,
      attach: crypto.randomUUID(),
    });
    if (state.ended && state.session && state.ended.session !== state.session) {
      // It left while the login was recorded, before the session was in place: the end of its
      // connection found no session to end, so it is ended here.
      if (!this.#closing) await this.#endSession(state.session, Date.now());
      this.#opts.log(`login: ${user.name} from ${state.host}: the client left before it was done`);
      return;
    }
    // The time a logout was saved while the server was away, once this login closed whatever
    // row the previous session left open (over several instances, the row of a session whose
    // instance died stays open until this login takes its place).
    if (m.lastLogout !== undefined) {
      await this.store.correctLastLogout(user.name, m.lastLogout).catch((error) => {
        this.#opts.log(`cannot correct the last logout of ${user.name}: ${asError(error).message}`);
      });
    }
    this.#opts.log(`login: ${user.name} from ${state.host}, peer port ${m.peerPort}`);
    await fc.send({
      type: "welcome",
      id: m.id,
      user: user.name,
      token,
      host: state.host,
      resumed: false,
      resumption: this.#tickets.issue(key, state.staticKey),
    });
    await this.#afterLogin(fc, user.name, { requests: true });
  }

  /**
   * Checks `password` against the account `name`, counted in the throttles of that name and of
   * `host` (checked first, then counted as a failure while the hash runs, so a burst of guesses
   * cannot all slip past the check). Resolves to the account when the password is right;
   * undefined when it is wrong or there is no such account (after the same work).
   */
  async #provePassword(
    name: string,
    host: string,
    password: string,
  ): Promise<UserRecord | undefined> {
    const key = nameKey(name);
    this.#checkThrottle(key, host);
    this.#userThrottle.begin(key);
    this.#addrThrottle.begin(host);
    let outcome: "ok" | "failed" | "cancelled" = "cancelled";
    let user: UserRecord | undefined;
    try {
      user = await this.store.getUser(name);
      const right = await this.#withHashSlot(() => verifyPassword(password, user, this.#opts.kdf));
      outcome = right && user ? "ok" : "failed";
    } finally {
      this.#userThrottle.end(key, outcome);
      // A success does not clear an address (it may be shared); it only stops counting.
      this.#addrThrottle.end(host, outcome === "ok" ? "cancelled" : outcome);
    }
    return outcome === "ok" ? user : undefined;
  }

  /**
   * Sets a new password for the logged-in user once the current one is proved, throttled as a
   * login is (a session left open on a shared machine must not let anyone guess at leisure).
   * The session goes on; a login elsewhere needs the new password from now on.
   */
  async #changePassword(
    fc: FramedConnection<ClientMessage>,
    state: ConnState,
    session: Session,
    m: Extract<ClientMessage, { type: "password_change" }>,
  ): Promise<void> {
    if (!await this.#provePassword(session.user, state.host, m.password)) {
      throw new Reply("LOGIN_FAILED", "the current password is wrong; nothing was changed");
    }
    const hashed = await this.#withHashSlot(() => hashPassword(m.newPassword, this.#opts.kdf));
    if (!await this.store.updatePassword(session.user, hashed)) {
      throw new Reply("NO_SUCH_USER", `the account ${session.user} is gone`);
    }
    this.#opts.log(`password changed: ${session.user} from ${state.host}`);
    await fc.send({ type: "ok", id: m.id });
  }

  /**
   * Hashes a password again with the current parameters, after a login proved it: old accounts
   * move to the stronger cost one login at a time. A failure leaves the old hash in place.
   */
  async #rehash(user: string, password: string): Promise<void> {
    try {
      const stronger = await this.#withHashSlot(() => hashPassword(password, this.#opts.kdf));
      await this.store.updatePassword(user, stronger);
      this.#opts.log(`rehashed the password of ${user} with ${stronger.kdf}`);
    } catch (error) {
      this.#opts.log(`cannot rehash the password of ${user}: ${asError(error).message}`);
    }
  }

  async #resume(
    fc: FramedConnection<ClientMessage>,
    state: ConnState,
    m: Extract<ClientMessage, { type: "resume" }>,
  ): Promise<void> {
    if (state.session) {
      throw new Reply("ALREADY_LOGGED_IN", `already logged in as ${state.session.user}`);
    }
    this.#checkThrottle("", state.host);
    // A fresh token at every resume; the presented one dies once the new one is used. The
    // store checks the token (its age, and the client it was given to: one copied elsewhere is
    // worth nothing), rotates it and takes the place, in one step.
    const token = randomBytes(32).toString("base64url");
    const hash = tokenHash(token);
    const attach = crypto.randomUUID();
    // In one transaction with the other resumes that arrived meanwhile (a group commit).
    const resumed = await this.#resumes.add({
      tokenHash: tokenHash(m.token),
      newTokenHash: hash,
      maxAgeMs: this.#opts.sessionMaxAgeMs,
      graceMs: SESSION_GRACE_MS,
      host: state.host,
      peerPort: m.peerPort,
      attach,
      staticKey: state.staticKey,
    });
    if (!resumed) {
      this.#addrThrottle.fail(state.host);
      throw new Reply("BAD_TOKEN", "your session has expired; log in again with your password");
    }
    const name = resumed.user;
    if (fc.isClosed) {
      // Its client gave up while the store worked (it will try again): give the place back.
      await this.#detach({ user: name, attach, at: Date.now() });
      return;
    }
    this.#claim(state, {
      user: name,
      key: nameKey(name),
      host: state.host,
      peerPort: m.peerPort,
      // A re-attach continues the login: `list` keeps showing when the user logged in.
      loginAt: resumed.loginAt,
      fc,
      registrySeq: resumed.registrySeq,
      tokenHash: hash,
      staticKey: state.staticKey,
      attach,
      attached: Promise.resolve(),
    });
    this.#opts.log(`resume: ${name} from ${state.host}, peer port ${m.peerPort}`);
    await fc.send({
      type: "welcome",
      id: m.id,
      user: name,
      token,
      host: state.host,
      resumed: true,
      // A new ticket when the one it came with is past half its life (or it came without).
      ...(state.ticketIssuedAt !== undefined &&
          Date.now() - state.ticketIssuedAt < TICKET_LIFETIME_MS / 2
        ? {}
        : { resumption: this.#tickets.issue(nameKey(name), state.staticKey) }),
    });
    await this.#afterLogin(fc, name, { requests: false });
  }

  /**
   * Tells a user who just logged in about waiting mail and read receipts, and (at a password
   * login, not at each re-attach) about contact requests still unanswered.
   */
  async #afterLogin(
    fc: FramedConnection<ClientMessage>,
    user: string,
    options: { requests: boolean },
  ): Promise<void> {
    // Asked at once: a network database answers them in one round trip.
    const [mailbox, , requests] = await Promise.all([
      this.store.mailbox(user),
      this.#pushReceipts(nameKey(user)),
      options.requests ? this.store.listContactRequests(user, REQUESTS_SHOWN_AT_LOGIN) : [],
    ]);
    const entries = mailbox.slice(0, MAX_MAILBOX_ENTRIES);
    if (entries.length > 0) fc.send({ type: "mail_summary", entries }).catch(() => {});
    for (const from of requests) {
      fc.send({ type: "contact_update", user: from, state: "request" }).catch(() => {});
    }
  }

  /**
   * Makes `session` the one of its user on this instance (a connection of theirs held here is
   * ended: the newer login wins, the old link may be half-open) and of its connection.
   */
  #claim(state: ConnState, session: Session): void {
    const previous = this.#online.get(session.key);
    if (previous) {
      this.#online.delete(session.key);
      void previous.fc.fail("ALREADY_LOGGED_IN", "you logged in again from another place");
    }
    state.session = session;
    this.#online.set(session.key, session);
  }

  /** A login: takes the place here at once, then in the directory of every instance. */
  async #startSession(state: ConnState, session: Omit<Session, "attached">): Promise<void> {
    // The in-memory change happens at once, before any await, so concurrent logins of one
    // user on this instance cannot both take the place.
    const attached = this.store.attach({
      user: session.user,
      host: session.host,
      peerPort: session.peerPort,
      loginAt: session.loginAt,
      registrySeq: session.registrySeq,
      attach: session.attach,
      staticKey: session.staticKey,
    });
    const claimed: Session = { ...session, attached: attached.catch(() => {}) };
    this.#claim(state, claimed);
    // In the directory of every instance: a place held elsewhere is ended there (a `kick`),
    // the registry row of the replaced login closed, watchers told if the user was away.
    try {
      await attached;
    } catch (error) {
      // Not in the directory (the database is away): not logged in either; the client retries.
      if (this.#online.get(session.key) === claimed) this.#online.delete(session.key);
      if (state.session === claimed) state.session = undefined;
      throw error;
    }
  }

  /** Ends a session whose connection closed or that logged out. */
  async #endSession(session: Session, at: number): Promise<void> {
    if (this.#online.get(session.key) === session) {
      this.#online.delete(session.key);
      this.#relay.cancelFor(session.key);
    }
    // Once its own attach is done (else this could come first and leave it in place), the
    // directory takes it out only if it still holds the place: a session replaced by a newer
    // login, here or elsewhere (a `kick`), leaves the newer one alone.
    await session.attached;
    if (await this.#detach({ user: session.user, attach: session.attach, at })) {
      this.#opts.log(`offline: ${session.user}`);
    }
  }

  /**
   * Takes `place` out of the directory if its attach still holds it (a newer login, here or
   * elsewhere, is left alone); whether it did. One that fails (the database away for a moment)
   * is kept and tried again later ({@link #retryDetaches}), and resolves false.
   */
  async #detach(place: Place): Promise<boolean> {
    try {
      return await this.#detaches.add(place);
    } catch (error) {
      this.#opts.log(
        `cannot record that ${place.user} went offline: ${asError(error).message}; ` +
          `trying again shortly`,
      );
      this.#undetached.set(place.attach, place);
      this.#scheduleDetachRetry();
      return false;
    }
  }

  #scheduleDetachRetry(): void {
    if (this.#detachRetry.timer !== undefined || this.#closing) return;
    this.#detachRetry.timer = setTimeout(() => {
      this.#detachRetry.timer = undefined;
      const running = this.#retryDetaches();
      this.#detachRetry.running = running;
      void running.finally(() => {
        if (this.#detachRetry.running === running) this.#detachRetry.running = undefined;
      });
    }, this.#detachRetry.ms);
  }

  /**
   * Tries the failed detaches again: those done are forgotten (and their users logged
   * offline); if any fails again, the next try waits twice as long (up to
   * {@link DETACH_RETRY_MAX_MS}). A late one is harmless: it removes only its own attach.
   */
  async #retryDetaches(): Promise<void> {
    if (this.#closing) return;
    const places = [...this.#undetached.values()];
    const results = await Promise.allSettled(places.map((place) => this.#detaches.add(place)));
    let failure: unknown;
    let failed = 0;
    for (const [i, result] of results.entries()) {
      const place = places[i]!;
      if (result.status === "rejected") {
        failure = result.reason;
        failed++;
        continue;
      }
      if (this.#undetached.get(place.attach) === place) this.#undetached.delete(place.attach);
      if (result.value) this.#opts.log(`offline: ${place.user}`);
    }
    if (failed === 0) {
      this.#detachRetry.ms = DETACH_RETRY_FIRST_MS;
      return;
    }
    this.#detachRetry.ms = Math.min(this.#detachRetry.ms * 2, DETACH_RETRY_MAX_MS);
    this.#opts.log(
      `cannot record that ${failed} users went offline yet: ${asError(failure).message}; ` +
        `trying again in ${this.#detachRetry.ms / 1000} s`,
    );
    this.#scheduleDetachRetry();
  }

  async #lookup(
    fc: FramedConnection<ClientMessage>,
    session: Session,
    m: Extract<ClientMessage, { type: "lookup" }>,
  ): Promise<void> {
    // One statement: the user, where they are, both directions of the contact, receipts.
    const found = await this.store.lookup(session.user, m.user);
    if (!found) throw new Reply("NO_SUCH_USER", `there is no user named ${m.user}`);
    const { user: target, presence: live, mine, theirs } = found;
    // Opening a chat with someone who read your mail: their receipts, now (before the answer).
    if (found.receipts) await this.#pushReceipts(session.key, target.name);
    // Addresses go only to mutual contacts: a request, answered or not, reveals nothing.
    const mutual = target.nameKey !== session.key && mine && theirs;
    const related = mutual || target.nameKey === session.key;
    return await fc.send({
      type: "lookup_result",
      id: m.id,
      user: target.name,
      // Presence too is for mutual contacts only: to anyone else, everybody is offline.
      online: live !== undefined && related,
      ...(live && related ? { host: live.host, port: live.peerPort } : {}),
      publicKey: target.publicKey,
      // Accounts from before migration 3 have none (stored as ""): leave the fields out.
      ...(target.mailKey ? { mailKey: target.mailKey, mailKeySig: target.mailKeySig } : {}),
      contact: mutual,
    });
  }

  /**
   * Tells every client the server is going away, closes all connections and the store.
   * Idempotent.
   */
  close(reason = "the server is shutting down"): Promise<void> {
    this.#closing ??= (async () => {
      const t0 = performance.now();
      const steps: string[] = [];
      const step = (what: string) => steps.push(`${what} ${(performance.now() - t0).toFixed(0)}`);
      clearInterval(this.#sweep);
      clearTimeout(this.#detachRetry.timer);
      this.#admission.close();
      for (const listener of [this.#listener, this.#probeListener]) {
        try {
          listener?.close();
        } catch { /* already closed */ }
      }
      await this.#acceptLoop;
      await this.#probeLoop;
      await this.#relay.close();
      step("listeners");
      const now = Date.now();
      const conns = [...this.#conns];
      await Promise.all(conns.map(async (fc) => {
        // Only over a finished handshake: a connection still in it gets nothing in plaintext
        // (a client takes no frame but the handshake's there), it is just closed.
        if (fc.isSecure) {
          await fc.send({ type: "server_closing", reason }).catch(() => {});
          // Our end first, and what the client still sends is read until it closes its end:
          // closing with a request of theirs unread sends a reset, which can make their side
          // drop the notice before it is read. end() waits at most its grace, then closes.
          await fc.end();
        } else {
          await fc.close();
        }
      }));
      step(`${conns.length} connections told and closed`);
      await Promise.all(this.#serving);
      step("served");
      // Everyone held here, in one transaction: one at a time, 10,000 users took seconds.
      const sessions = [...this.#online.values()];
      this.#online.clear();
      for (const session of sessions) this.#relay.cancelFor(session.key);
      await Promise.all(sessions.map((session) => session.attached));
      await this.store.detachMany(sessions, now).catch((error) => {
        this.#opts.log(
          `cannot record the logout of ${sessions.length} users: ${asError(error).message}`,
        );
      });
      // The last try for those that failed before (the retries stop here).
      await this.#detachRetry.running;
      const undetached = [...this.#undetached.values()];
      this.#undetached.clear();
      if (undetached.length > 0) {
        await this.store.detachMany(undetached, undetached[0]!.at).catch((error) => {
          this.#opts.log(
            `cannot record the logout of ${undetached.length} users: ${asError(error).message}`,
          );
        });
      }
      step(`${sessions.length + undetached.length} logouts recorded`);
      await this.store.close();
      step("store closed");
      this.#opts.log(`closed (ms from the start): ${steps.join(", ")}`);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** At most `size` pieces of work at once; the rest wait in arrival order. */
class Slots {
  #free: number;
  readonly #waiting: (() => void)[] = [];

  constructor(size: number) {
    this.#free = size;
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    try {
      return await work();
    } finally {
      const next = this.#waiting.shift();
      if (next) next(); // hand the slot on
      else this.#free++;
    }
  }
}

/**
 * The reader's signed reads of a `mail_confirm`: one signature per message (`receipts`), or one
 * for the batch (`receipt`), kept with each message's path to the root it signed as
 * `<signature>.<path>` (see {@link receiptItem}).
 */
function signedReads(
  m: Extract<ClientMessage, { type: "mail_confirm" }>,
): Map<string, SignedRead> {
  const reads = new Map((m.receipts ?? []).map((r) => [r.msgId, { readAt: r.readAt, sig: r.sig }]));
  if (m.receipt) {
    const refused = new Set(m.rejected ?? []);
    const read = m.msgIds.filter((id) => !refused.has(id));
    if (read.length === 0) return reads;
    const proofs = receiptProofs(read);
    read.forEach((id, i) => {
      reads.set(id, { readAt: m.receipt!.readAt, sig: `${m.receipt!.sig}.${proofs[i]}` });
    });
  }
  return reads;
}

/**
 * Stored receipts as pushed to their sender: the reads in `items` (see {@link receiptItem}), the
 * messages the reader's client refused in `rejected`.
 */
function receiptsPush(receipts: Receipt[]): Extract<ServerMessage, { type: "receipts" }> {
  const items: ReturnType<typeof receiptItem>[] = [];
  const rejected: { msgId: string; reader: string; at: number }[] = [];
  for (const r of receipts) {
    if (r.rejected) rejected.push({ msgId: r.msgId, reader: r.reader, at: r.readAt });
    else items.push(receiptItem(r));
  }
  return { type: "receipts", items, ...(rejected.length > 0 ? { rejected } : {}) };
}

/** A stored read receipt as pushed to its sender: a batch's signature and path apart. */
function receiptItem(r: Receipt): Omit<Receipt, "rejected"> & { proof?: string } {
  const { msgId, reader, readAt, sig } = r;
  const dot = sig?.indexOf(".") ?? -1;
  if (dot < 0) return { msgId, reader, readAt, ...(sig === undefined ? {} : { sig }) };
  return { msgId, reader, readAt, sig: sig!.slice(0, dot), proof: sig!.slice(dot + 1) };
}
