/**
 * The Confab client core, without any terminal: one control connection to the server, a
 * listener for peers, and direct authenticated links to the people you chat with. Front ends
 * (terminal, `--json`, load generators) drive it through methods and read its events.
 */
import { join } from "node:path";
import {
  asError,
  type BinaryFrame,
  type FramedConnection,
  type OutgoingMessage,
  SilentPeerError,
} from "../net/framed_connection.ts";
import {
  ConnectionClosedError,
  ProtocolError,
  RemoteError,
  TimeoutError,
} from "../protocol/errors.ts";
import {
  type LookupResultMessage,
  MAX_TEXT_LENGTH,
  type PeerMessage,
  type ServerMessage,
  USERNAME_PATTERN,
  type WelcomeMessage,
} from "../protocol/messages.ts";
import { acceptPeer, dialPeer, type PeerLink } from "../peer/peer_link.ts";
import { Identity } from "../peer/identity.ts";
import { delay } from "../util/time.ts";
import { ClientStore, type DeliveryMark, groupChat } from "./client_store.ts";
import { GroupChats, GroupError } from "./group_chats.ts";
import { TransferError, Transfers } from "./transfers.ts";
import { groupHandle } from "../peer/group_state.ts";
import { KnownServers } from "./known_servers.ts";
import {
  CONTROL_HEARTBEAT,
  nextBackoff,
  openServerLink,
  RECONNECT_BACKOFF,
  resumeSession,
  ServerKeyChangedError,
  type ServerLink,
} from "./server_link.ts";
import { generateKeyPair, type KeyPair } from "../crypto/noise.ts";
import { mailKeyStatement, verifySignature } from "../crypto/ed25519.ts";
import { ownNumber, safetyNumber } from "../crypto/fingerprint.ts";
import { MailKey, MailRejected, openMail, sealMail } from "../peer/sealed_mail.ts";
import type { ClientEvent, EventSink } from "./events.ts";

export interface ClientOptions {
  /** Home dir: one subfolder per user (identity key, history). */
  home: string;
  server: { host: string; port: number };
  /** Peer port to listen on; 0 picks a free one. */
  peerPort?: number;
  /** Address the peer listener binds (default: loopback when the server is on loopback). */
  listenHost?: string;
  /** Messages of a chat shown when it opens. */
  historyLines?: number;
  /** How long a peer has to acknowledge a message before it counts as not delivered. */
  ackTimeoutMs?: number;
  /** Accept (and pin) a server key that differs from the pinned one. */
  acceptServerKey?: boolean;
  /**
   * The peer port to announce to the server, when a port forwarder sits in front of the
   * listening port (default: the listening port).
   */
  announcePort?: number;
  /**
   * A peer silent this long (frozen, cut off) is declared gone. Peers ping each second; a
   * peer whose process died is noticed at once from its socket.
   */
  peerTimeoutMs?: number;
  /** Largest file accepted from others. */
  maxFileSize?: number;
}

const LOGOUT_SETTING = "pending_logout";
/** How long a lookup made for sending is reused for the next messages to the same user. */
const SEND_LOOKUP_TTL_MS = 2_000;
/** Ids of received messages remembered in memory to drop duplicates fast (the store has all). */
const SEEN_IDS = 10_000;

/** A failure the user should see as one line, with its stable code. */
export class ClientError extends Error {
  override name = "ClientError";
  constructor(readonly code: string, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Acks are waited for per peer and message id. */
function ackKey(user: string, id: string): string {
  return `${user.toLowerCase()}\n${id}`;
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host.startsWith("127.") || host === "::1";
}

/** Turns a connect failure into a sentence that says what to do. */
export function describeConnectError(error: unknown, where: string, flag: string): string {
  const e = asError(error);
  if (e instanceof Deno.errors.ConnectionRefused) {
    return `cannot reach ${where}: connection refused (is it running? try ${flag})`;
  }
  if (e instanceof Deno.errors.TimedOut || e instanceof TimeoutError) {
    return `cannot reach ${where}: timed out (check the address, try ${flag})`;
  }
  if (e instanceof Deno.errors.NotFound || /lookup|resolve/i.test(e.message)) {
    return `cannot reach ${where}: unknown host (try ${flag})`;
  }
  if (e instanceof ProtocolError) return `${where}: ${e.message}`;
  return `cannot reach ${where}: ${e.message}`;
}

interface Session {
  user: string;
  token: string;
  identity: Identity;
  /** Opens offline mail sealed to us; missing if this home lost it. */
  mailKey: MailKey | undefined;
  store: ClientStore;
}

interface Waiter {
  resolve: (answer: "ack" | "busy") => void;
}

/** A message on its way out. */
interface Outgoing {
  id: string;
  to: string;
  ts: number;
  text: string;
}

/** How a send ended: `**`, `*`, still in the outbox, or refused for good. */
export type Outcome = "delivered" | "stored" | "queued" | "failed";

export interface MailboxEntry {
  from: string;
  count: number;
  newest: number;
}

export class ConfabClient implements AsyncDisposable {
  readonly #opts: Required<Omit<ClientOptions, "listenHost" | "announcePort">> & {
    listenHost: string;
    announcePort: number | undefined;
  };
  readonly #emit: EventSink;
  #listener: Deno.TcpListener | undefined;
  #acceptLoop: Promise<void> | undefined;
  #server: FramedConnection<ServerMessage> | undefined;
  #serverPort: number;
  #session: Session | undefined;
  #reconnecting: Promise<void> | undefined;
  readonly #links = new Map<string, PeerLink>();
  readonly #dialing = new Map<string, Promise<PeerLink>>();
  readonly #linkTasks = new Set<Promise<unknown>>();
  readonly #acks = new Map<string, Waiter>();
  readonly #queues = new Map<string, Promise<void>>();
  readonly #inFlight = new Set<string>();
  readonly #seen = new Set<string>();
  #seq = 0;
  #chatWith: string | undefined;
  /** The group whose window is open (then #chatWith is unset). */
  #group: string | undefined;
  #groups: GroupChats | undefined;
  #transfers: Transfers | undefined;
  #loggingIn: Promise<void> | undefined;
  readonly #sendLookups = new Map<string, { result: LookupResultMessage; at: number }>();
  /** Mail keys whose signature by their owner's identity key was checked already. */
  readonly #vouchedMailKeys = new Set<string>();
  #connecting: Promise<FramedConnection<ServerMessage>> | undefined;
  /** Static key for Noise handshakes, made per process: users prove who they are inside. */
  #noiseKey: Promise<KeyPair> | undefined;
  readonly #knownServers: KnownServers;
  readonly #abort = new AbortController();
  #closing: Promise<void> | undefined;

  constructor(options: ClientOptions, emit: EventSink) {
    this.#opts = {
      home: options.home,
      server: options.server,
      peerPort: options.peerPort ?? 0,
      listenHost: options.listenHost ??
        (isLoopback(options.server.host) ? "127.0.0.1" : "0.0.0.0"),
      historyLines: options.historyLines ?? 50,
      ackTimeoutMs: options.ackTimeoutMs ?? 5_000,
      acceptServerKey: options.acceptServerKey ?? false,
      peerTimeoutMs: options.peerTimeoutMs ?? 3_000,
      maxFileSize: options.maxFileSize ?? 4 * 1024 ** 3,
      announcePort: options.announcePort,
    };
    this.#serverPort = options.server.port;
    this.#emit = emit;
    this.#knownServers = new KnownServers(options.home);
  }

  get user(): string | undefined {
    return this.#session?.user;
  }

  get chatWith(): string | undefined {
    return this.#chatWith;
  }

  /** What the prompt shows for the open chat: a user, or a group's handle and members. */
  get chatLabel(): string | undefined {
    if (this.#chatWith) return this.#chatWith;
    if (this.#group && this.#groups) {
      const others = this.#groups.members(this.#group)
        .filter((m) => m.toLowerCase() !== this.#session?.user.toLowerCase());
      return `${groupHandle(this.#group)} (${others.join(", ")})`;
    }
    return undefined;
  }

  /** True while a chat window (1:1 or group) is open. */
  get inChat(): boolean {
    return this.#chatWith !== undefined || this.#group !== undefined;
  }

  get serverAddress(): string {
    return `${this.#opts.server.host}:${this.#serverPort}`;
  }

  get peerPort(): number {
    return this.#listener?.addr.port ?? 0;
  }

  get serverConnected(): boolean {
    return this.#server !== undefined && !this.#server.isClosed;
  }

  /**
   * Starts listening for peers.
   * @throws {ClientError} PORT_IN_USE when the peer port is taken.
   */
  start(): void {
    try {
      this.#listener = Deno.listen({
        hostname: this.#opts.listenHost,
        port: this.#opts.peerPort,
        transport: "tcp",
      });
    } catch (error) {
      if (error instanceof Deno.errors.AddrInUse) {
        throw new ClientError(
          "PORT_IN_USE",
          `peer port ${this.#opts.peerPort} is already in use (pick another with --port N, ` +
            `or leave it out for any free port)`,
        );
      }
      throw error;
    }
    this.#acceptLoop = this.#acceptPeers(this.#listener);
    this.#emit({ type: "ready", peerPort: this.peerPort, server: this.serverAddress });
  }

  // ---- server connection ---------------------------------------------------------------------

  #connectServer(): Promise<FramedConnection<ServerMessage>> {
    if (this.#server && !this.#server.isClosed) return Promise.resolve(this.#server);
    this.#connecting ??= this.#openServer().finally(() => (this.#connecting = undefined));
    return this.#connecting;
  }

  /** This process's static Noise key, made on first use. */
  async #staticKey(): Promise<KeyPair> {
    this.#noiseKey ??= generateKeyPair();
    return await this.#noiseKey;
  }

  async #openServer(): Promise<FramedConnection<ServerMessage>> {
    const where = `server ${this.serverAddress}`;
    let link: ServerLink;
    try {
      link = await openServerLink({
        host: this.#opts.server.host,
        port: this.#serverPort,
        staticKeyPair: await this.#staticKey(),
        knownServers: this.#knownServers,
        acceptNewKey: this.#opts.acceptServerKey,
        signal: AbortSignal.any([this.#abort.signal, AbortSignal.timeout(10_000)]),
      });
    } catch (error) {
      if (error instanceof ServerKeyChangedError) {
        throw new ClientError("SERVER_KEY_CHANGED", error.message);
      }
      const code = error instanceof ProtocolError && error.code === "VERSION_MISMATCH"
        ? "VERSION_MISMATCH"
        : "SERVER_UNREACHABLE";
      throw new ClientError(code, describeConnectError(error, where, "--server HOST:PORT"), {
        cause: error,
      });
    }
    if (link.pin === "new") {
      this.#emit({
        type: "info",
        text: `first contact with ${where}: pinned its key (fingerprint ${link.fingerprint})`,
      });
    }
    const fc = link.fc;
    fc.setHandler((m) => this.#onServerMessage(m));
    // Logged in already: this is a re-attach. Resume before anyone else uses the link, so a
    // command typed meanwhile never runs on a connection without our session.
    const session = this.#session;
    if (session) {
      try {
        await resumeSession(fc, session.token, this.#opts.announcePort ?? this.peerPort);
      } catch (error) {
        await fc.close();
        if (error instanceof RemoteError && error.code === "BAD_TOKEN") {
          this.#endSession(error.message);
          throw new ClientError("BAD_TOKEN", error.message);
        }
        throw new ClientError("SERVER_UNREACHABLE", `${where}: could not re-attach`, {
          cause: error,
        });
      }
    }
    this.#server = fc;
    fc.startHeartbeat(CONTROL_HEARTBEAT); // (already running after a resume: a no-op then)
    const closed = fc.closed.then((reason) => this.#onServerClosed(fc, reason));
    this.#track(closed);
    if (session && this.#session === session) {
      this.#emit({ type: "server_back", resumed: true });
      this.#flushOutbox(session);
    }
    return fc;
  }

  async #onServerMessage(m: ServerMessage): Promise<void> {
    // Pushes that follow a login (mail summary, receipts) wait until the login is settled,
    // so they are handled with the session in place and shown after "logged in".
    if (this.#loggingIn) await this.#loggingIn;
    switch (m.type) {
      case "presence":
        this.#sendLookups.delete(m.user.toLowerCase());
        this.#emit({ type: "presence", user: m.user, online: m.online });
        return;
      case "server_closing":
        this.#emit({ type: "server_closing", reason: m.reason });
        return;
      case "error":
        if (m.code === "ALREADY_LOGGED_IN") this.#endSession(`server: ${m.message}`);
        else this.#emit({ type: "error", code: m.code, message: `server: ${m.message}` });
        return;
      case "mail_notice":
        this.#emit({ type: "mail_notice", from: m.from, count: m.count });
        return;
      case "mail_summary":
        this.#emit({ type: "mail_summary", entries: m.entries });
        return;
      case "receipts":
        this.#onReceipts(m.items);
        return;
    }
  }

  #onServerClosed(fc: FramedConnection<ServerMessage>, reason: Error | undefined): void {
    if (this.#server !== fc) return;
    this.#server = undefined;
    if (this.#closing || !this.#session) return;
    this.#emit({
      type: "server_lost",
      reason: reason ? reason.message : "the server closed the connection",
    });
    this.#reconnecting ??= this.#reconnect().finally(() => (this.#reconnecting = undefined));
    this.#track(this.#reconnecting);
  }

  /** Re-attaches with the session token, with exponential backoff, until it works. */
  async #reconnect(): Promise<void> {
    let wait: number = RECONNECT_BACKOFF.initialMs;
    while (this.#session && !this.#closing) {
      try {
        await delay(wait + Math.random() * wait / 2, this.#abort.signal);
      } catch {
        return; // closing
      }
      wait = nextBackoff(wait);
      if (!this.#session) return;
      try {
        await this.#connectServer(); // re-attaches with the session token
        return;
      } catch (error) {
        if (error instanceof ClientError && error.code === "BAD_TOKEN") return;
        if (error instanceof ClientError && error.code === "SERVER_KEY_CHANGED") {
          // Retrying cannot help (only the user can accept the key): warn now, not silently.
          this.#emit({ type: "error", code: error.code, message: error.message });
          return;
        }
      }
    }
  }

  async #request<R extends ServerMessage>(
    message: { type: string; [k: string]: unknown },
  ): Promise<R> {
    const fc = await this.#connectServer();
    try {
      return await fc.request<R>(message);
    } catch (error) {
      if (error instanceof RemoteError) throw new ClientError(error.code, error.message);
      if (error instanceof ConnectionClosedError || error instanceof TimeoutError) {
        throw new ClientError(
          "SERVER_UNREACHABLE",
          `lost the server ${this.serverAddress} during ${message.type}; try again`,
        );
      }
      throw error;
    }
  }

  // ---- accounts ------------------------------------------------------------------------------

  #userDir(user: string): string {
    return join(this.#opts.home, user.toLowerCase());
  }

  #checkName(user: string): void {
    if (!USERNAME_PATTERN.test(user)) {
      throw new ClientError(
        "BAD_USERNAME",
        `"${user.slice(0, 40)}" is not a valid username: 1-32 letters, digits, _ - .`,
      );
    }
  }

  /** Creates an account (and its identity key), then logs in. */
  async signup(user: string, password: string, serverPort?: number): Promise<void> {
    this.#checkName(user);
    if (this.#session) throw new ClientError("ALREADY_LOGGED_IN", "log out first (out)");
    if (serverPort !== undefined) this.#serverPort = serverPort;
    const { identity, pkcs8 } = await Identity.generate();
    const mailKey = await MailKey.generate();
    const mailKeySig = await identity.sign(mailKeyStatement(user, mailKey.publicKey));
    this.#emit({ type: "info", text: `creating account ${user} on ${this.serverAddress}` });
    await this.#request({
      type: "signup",
      user,
      password,
      publicKey: identity.publicKey,
      mailKey: mailKey.publicKey,
      mailKeySig,
    });
    await Identity.save(join(this.#userDir(user), "identity.json"), identity.publicKey, pkcs8);
    await mailKey.save(join(this.#userDir(user), "mail-key.json"));
    this.#emit({ type: "signed_up", user });
    await this.login(user, password);
  }

  async login(user: string, password: string, serverPort?: number): Promise<void> {
    this.#checkName(user);
    if (this.#session) {
      throw new ClientError("ALREADY_LOGGED_IN", `already logged in as ${this.#session.user}`);
    }
    if (serverPort !== undefined) this.#serverPort = serverPort;
    const identity = await Identity.load(join(this.#userDir(user), "identity.json"));
    if (!identity) {
      throw new ClientError(
        "NO_IDENTITY",
        `no identity key for ${user} in ${this.#opts.home}: log in from the home dir where you ` +
          `signed up (--home DIR), or copy ${user.toLowerCase()}/identity.json there`,
      );
    }
    const store = new ClientStore(this.#userDir(user));
    const settled = Promise.withResolvers<void>();
    this.#loggingIn = settled.promise;
    try {
      const saved = store.getSetting(LOGOUT_SETTING);
      this.#emit({ type: "info", text: `logging in to ${this.serverAddress} as ${user}` });
      const welcome = await this.#request<WelcomeMessage>({
        type: "login",
        user,
        password,
        peerPort: this.#opts.announcePort ?? this.peerPort,
        ...(saved ? { lastLogout: Number(saved) } : {}),
      });
      if (saved) store.setSetting(LOGOUT_SETTING, undefined);
      const mailKey = await MailKey.load(join(this.#userDir(user), "mail-key.json"));
      this.#session = { user: welcome.user, token: welcome.token, identity, mailKey, store };
      // Group messages a crash interrupted cannot be resent (the group is gone): say so.
      store.failInterruptedGroupSends();
      this.#groups = this.#makeGroups(this.#session);
      this.#transfers = this.#makeTransfers(this.#session);
      await this.#transfers.prepare();
      if (!mailKey) {
        this.#emit({
          type: "error",
          code: "NO_MAIL_KEY",
          message: `no mail key in ${this.#userDir(user)}: offline messages to you cannot be ` +
            `opened on this device (copy mail-key.json from where you signed up)`,
        });
      }
      this.#emit({
        type: "logged_in",
        user: welcome.user,
        server: this.serverAddress,
        resumed: false,
      });
      this.#flushOutbox(this.#session);
    } catch (error) {
      store.close();
      throw error;
    } finally {
      this.#loggingIn = undefined;
      settled.resolve();
    }
  }

  /**
   * Logs out. When the server cannot be reached, the logout time is saved locally and sent
   * with the next login, so the server's registry ends up with the true time.
   */
  async logout(): Promise<void> {
    const session = this.#requireSession();
    if (this.#chatWith) await this.leaveChat();
    let savedLocally = false;
    const at = Date.now();
    try {
      if (!this.serverConnected) throw new Error("not connected");
      await this.#server!.request({ type: "logout" }, { timeoutMs: 3000 });
    } catch {
      session.store.setSetting(LOGOUT_SETTING, String(at));
      savedLocally = true;
    }
    this.#endSession();
    this.#emit({ type: "logged_out", user: session.user, savedLocally, at });
  }

  /**
   * Forgets the session: closes links, the store; the server connection stays for reuse.
   * With a reason (the server ended it: replaced, expired), says so as `logged_out`.
   */
  #endSession(reason?: string): void {
    const session = this.#session;
    if (!session) return;
    if (reason !== undefined) {
      this.#emit({ type: "error", code: "SESSION_ENDED", message: reason });
      this.#emit({ type: "logged_out", user: session.user, savedLocally: false, at: Date.now() });
    }
    this.#session = undefined;
    this.#chatWith = undefined;
    this.#group = undefined;
    this.#groups?.close();
    this.#groups = undefined;
    void this.#transfers?.close();
    this.#transfers = undefined;
    for (const link of this.#links.values()) {
      link.fc.send({ type: "bye" }).catch(() => {});
      void link.fc.close();
    }
    this.#links.clear();
    session.store.close();
  }

  #requireSession(): Session {
    if (!this.#session) {
      throw new ClientError("NOT_LOGGED_IN", "log in first: in <user> <password>");
    }
    return this.#session;
  }

  // ---- contacts and directory ----------------------------------------------------------------

  /** My contact list from the server, with who is online. */
  #contactList(): Promise<Extract<ServerMessage, { type: "contact_list" }>> {
    return this.#request({ type: "contacts" });
  }

  async contacts(): Promise<{ user: string; online: boolean }[]> {
    this.#requireSession();
    const reply = await this.#contactList();
    this.#emit({ type: "contacts", contacts: reply.contacts });
    return reply.contacts;
  }

  async addContact(user: string): Promise<void> {
    this.#requireSession();
    this.#checkName(user);
    await this.#request({ type: "contact_add", user });
    this.#emit({ type: "contact_added", user });
  }

  async removeContact(user: string): Promise<void> {
    this.#requireSession();
    this.#checkName(user);
    await this.#request({ type: "contact_remove", user });
    this.#emit({ type: "contact_removed", user });
  }

  /**
   * Looks a user up and checks their identity key against the one pinned at first contact.
   * @throws {ClientError} KEY_CHANGED (and says so loudly) when it differs.
   */
  async #lookup(user: string): Promise<LookupResultMessage> {
    const session = this.#requireSession();
    const result = await this.#request<LookupResultMessage>({ type: "lookup", user });
    const before = session.store.rememberKey(result.user, result.publicKey);
    if (before !== undefined && before !== result.publicKey) {
      this.#emit({ type: "key_changed", user: result.user });
      throw new ClientError(
        "KEY_CHANGED",
        `${result.user}'s identity key has changed: nothing is sent to or accepted from ` +
          `${result.user} until you compare safety numbers (fingerprint ${result.user}) ` +
          `with them and accept the new key (trust ${result.user})`,
      );
    }
    return result;
  }

  /**
   * A lookup for sending: a burst of messages to someone away reuses one answer for a couple of
   * seconds instead of asking the server again for each (a presence change drops it at once).
   */
  async #lookupForSend(user: string): Promise<LookupResultMessage> {
    const key = user.toLowerCase();
    const cached = this.#sendLookups.get(key);
    if (cached && Date.now() - cached.at < SEND_LOOKUP_TTL_MS) return cached.result;
    const result = await this.#lookup(user);
    this.#sendLookups.set(key, { result, at: Date.now() });
    return result;
  }

  /** The directory's mail key for `user`, checked: signed by their pinned identity key. */
  async #mailKeyOf(user: string): Promise<{ user: string; mailKey: string }> {
    const found = await this.#lookupForSend(user);
    if (found.mailKey === undefined || found.mailKeySig === undefined) {
      throw new ClientError(
        "NO_MAIL_KEY",
        `${found.user} has no mail key yet (an account from an older version): ` +
          `messages can only reach them directly, when they are online`,
      );
    }
    const vouched = `${found.publicKey} ${found.mailKey} ${found.mailKeySig}`;
    const ok = this.#vouchedMailKeys.has(vouched) || await verifySignature(
      found.publicKey,
      found.mailKeySig,
      mailKeyStatement(found.user, found.mailKey),
    );
    if (ok) this.#vouchedMailKeys.add(vouched);
    if (!ok) {
      throw new ClientError(
        "AUTH_FAILED",
        `the directory's mail key for ${found.user} is not signed by their identity key; ` +
          `not sending`,
      );
    }
    return { user: found.user, mailKey: found.mailKey };
  }

  /** Accepts a changed identity key for `user` (after comparing safety numbers). */
  async trust(user: string): Promise<void> {
    const session = this.#requireSession();
    this.#checkName(user);
    const found = await this.#request<LookupResultMessage>({ type: "lookup", user });
    session.store.trustKey(found.user, found.publicKey);
    this.#emit({
      type: "key_trusted",
      user: found.user,
      safetyNumber: await safetyNumber(
        { user: session.user, publicKey: session.identity.publicKey },
        { user: found.user, publicKey: found.publicKey },
      ),
    });
  }

  /**
   * Shows my own number, or the safety number I share with `user` (computed from the key the
   * directory has now, so a changed key shows a new number).
   */
  async fingerprint(user?: string): Promise<void> {
    const session = this.#requireSession();
    if (user === undefined) {
      this.#emit({
        type: "fingerprint",
        user: session.user,
        number: await ownNumber(session.user, session.identity.publicKey),
      });
      return;
    }
    this.#checkName(user);
    const found = await this.#request<LookupResultMessage>({ type: "lookup", user });
    const pinned = session.store.knownKey(found.user);
    this.#emit({
      type: "fingerprint",
      user: session.user,
      with: found.user,
      number: await safetyNumber(
        { user: session.user, publicKey: session.identity.publicKey },
        { user: found.user, publicKey: found.publicKey },
      ),
      changed: pinned !== undefined && pinned !== found.publicKey,
    });
  }

  /** The directory's key for a user who dials us; the last known key if the server is away. */
  async #resolveKey(user: string): Promise<{ user: string; publicKey: string }> {
    const session = this.#requireSession();
    try {
      const result = await this.#lookup(user);
      return { user: result.user, publicKey: result.publicKey };
    } catch (error) {
      const known = session.store.knownKey(user);
      if (known && error instanceof ClientError && error.code === "SERVER_UNREACHABLE") {
        return { user, publicKey: known };
      }
      throw new ProtocolError(
        "AUTH_FAILED",
        `cannot check who ${user} is: ${asError(error).message}`,
      );
    }
  }

  // ---- peer links ----------------------------------------------------------------------------

  async #acceptPeers(listener: Deno.TcpListener): Promise<void> {
    let backoff = 10;
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
        backoff = 10;
      } catch (error) {
        if (this.#closing || error instanceof Deno.errors.BadResource) return;
        await delay(backoff).catch(() => {});
        backoff = Math.min(backoff * 2, 1000);
        continue;
      }
      this.#track(this.#onPeerConnection(conn));
    }
  }

  async #onPeerConnection(conn: Deno.TcpConn): Promise<void> {
    const session = this.#session;
    if (!session || this.#closing) {
      try {
        conn.close();
      } catch { /* gone */ }
      return;
    }
    try {
      const link = await acceptPeer(conn, {
        me: session.user,
        identity: session.identity,
        noiseKey: await this.#staticKey(),
        resolveKey: (user) => this.#resolveKey(user),
      });
      if (this.#session !== session || this.#closing) {
        await link.fc.close();
        return;
      }
      this.#attachLink(link);
    } catch (error) {
      const e = asError(error);
      if (e instanceof ProtocolError && e.code === "AUTH_FAILED") {
        this.#emit({ type: "error", code: "AUTH_FAILED", message: `refused a peer: ${e.message}` });
      }
    }
  }

  /**
   * Adopts an authenticated link. When both sides dialed at once there are two links; both
   * ends keep the one dialed by the user whose name sorts first, so they agree without talking.
   */
  #attachLink(link: PeerLink): PeerLink {
    const key = link.user.toLowerCase();
    const existing = this.#links.get(key);
    if (existing && !existing.fc.isClosed) {
      const me = this.#session!.user.toLowerCase();
      const preferred = me < key ? me : key;
      const newWins = link.initiator.toLowerCase() === existing.initiator.toLowerCase() ||
        link.initiator.toLowerCase() === preferred;
      if (!newWins) {
        void link.fc.close();
        return existing;
      }
      this.#links.delete(key);
      void existing.fc.close();
    }
    this.#links.set(key, link);
    link.fc.startHeartbeat({
      intervalMs: Math.min(1_000, this.#opts.peerTimeoutMs / 3),
      timeoutMs: this.#opts.peerTimeoutMs,
    });
    const address = `${link.fc.remoteAddr.hostname}:${link.fc.remoteAddr.port}`;
    this.#emit({ type: "link_up", user: link.user, address, outbound: link.outbound });
    link.fc.setHandler((m) => this.#onPeerMessage(link, m));
    this.#track(link.fc.closed.then(async (reason) => {
      if (this.#links.get(key) !== link) return;
      // Both ends dialed at once and the other end dropped this link as the duplicate: our
      // own dial is about to replace it. Only if it does not is the user gone.
      // The other end may close it hard (a write then fails with a broken pipe). Not when the
      // link went silent: that is the peer itself, and a dial to a frozen peer only hangs.
      const replacing = reason instanceof SilentPeerError ? undefined : this.#dialing.get(key);
      if (replacing) await replacing.catch(() => {});
      if (this.#links.get(key) !== link) return;
      this.#links.delete(key);
      const why = reason?.message ?? "closed";
      this.#emit({ type: "link_down", user: link.user, reason: why });
      if (reason instanceof SilentPeerError) {
        // Frozen or cut off: the server may still think they are online. Let it check.
        this.#server?.request({ type: "report_unreachable", user: link.user }).catch(() => {});
      }
      this.#groups?.onLinkDown(link.user);
    }));
    if (this.#chatWith?.toLowerCase() === key) {
      link.fc.send({ type: "chat_state", open: true }).catch(() => {});
    }
    return link;
  }

  async #onPeerMessage(link: PeerLink, m: PeerMessage | BinaryFrame): Promise<void> {
    if (this.#transfers && await this.#transfers.onPeerMessage(link, m)) return;
    if (m.type === "binary") return; // file data for no transfer (it was cancelled)
    if (this.#groups && await this.#groups.onPeerMessage(link, m)) return;
    switch (m.type) {
      case "msg":
        return this.#receive(link, m);
      case "ack":
        this.#acks.get(ackKey(link.user, m.id))?.resolve("ack");
        return;
      case "busy":
        this.#acks.get(ackKey(link.user, m.id))?.resolve("busy");
        return;
      case "chat_state":
        this.#emit({ type: m.open ? "peer_joined" : "peer_left", user: link.user });
        return;
      case "bye":
        await link.fc.close();
        return;
      case "error":
        this.#emit({ type: "error", code: m.code, message: `${link.user}: ${m.message}` });
        return;
      case "ping": // answered by the connection itself (FramedConnection)
      case "pong":
        return;
      default:
        await link.fc.fail("BAD_MESSAGE", `${m.type} is not expected after the handshake`);
    }
  }

  async #receive(link: PeerLink, m: Extract<PeerMessage, { type: "msg" }>): Promise<void> {
    const session = this.#session;
    if (!session) return;
    const chat = this.#chatWith?.toLowerCase();
    // (In a group, a message from someone else is shown as a notice instead.)
    if (chat !== undefined && chat !== link.user.toLowerCase() && !session.store.hasMessage(m.id)) {
      // Busy in another chat: as in the original, the message waits on the server and we are
      // told there is mail, instead of it cutting into this conversation.
      await link.fc.send({ type: "busy", id: m.id }).catch(() => {});
      return;
    }
    const duplicate = this.#seen.has(m.id) || !session.store.addMessage({
      id: m.id,
      chat: link.user,
      sender: link.user,
      ts: m.ts,
      text: m.text,
      outgoing: false,
      mark: "**",
    });
    // Acknowledge after the message is stored, also a duplicate (our first ack may be lost).
    await link.fc.send({ type: "ack", id: m.id }).catch(() => {});
    if (duplicate) return;
    this.#seen.add(m.id);
    if (this.#seen.size > SEEN_IDS) this.#seen.delete(this.#seen.values().next().value!);
    this.#emit({
      type: "message",
      id: m.id,
      from: link.user,
      ts: m.ts,
      text: m.text,
      inChat: this.#chatWith?.toLowerCase() === link.user.toLowerCase(),
      via: "direct",
    });
  }

  /** An open link to `user`, reusing one that exists or dialing them. */
  async #linkTo(user: string, emitProgress: boolean): Promise<PeerLink> {
    const key = user.toLowerCase();
    const existing = this.#links.get(key);
    if (existing && !existing.fc.isClosed) return existing;
    let pending = this.#dialing.get(key);
    if (!pending) {
      pending = this.#dial(user, emitProgress).finally(() => this.#dialing.delete(key));
      this.#dialing.set(key, pending);
    }
    return await pending;
  }

  async #dial(user: string, emitProgress: boolean): Promise<PeerLink> {
    const session = this.#requireSession();
    if (emitProgress) this.#emit({ type: "info", text: `looking ${user} up` });
    // A command looks up afresh; a message on its way may use a lookup of a moment ago.
    const found = emitProgress ? await this.#lookup(user) : await this.#lookupForSend(user);
    if (!found.online) {
      throw new ClientError("USER_OFFLINE", `${found.user} is offline`);
    }
    if (found.host === undefined || found.port === undefined) {
      throw new ClientError(
        "NOT_A_CONTACT",
        `${found.user} is online but not reachable for you: add them (contacts add ${found.user})`,
      );
    }
    const where = `${found.host}:${found.port}`;
    if (emitProgress) {
      this.#emit({ type: "info", text: `connecting to ${found.user} at ${where}` });
    }
    let link: PeerLink;
    try {
      link = await dialPeer({ host: found.host, port: found.port }, {
        me: session.user,
        identity: session.identity,
        noiseKey: await this.#staticKey(),
        user: found.user,
        publicKey: found.publicKey,
        signal: this.#abort.signal,
      });
    } catch (error) {
      if (error instanceof ProtocolError && error.code === "AUTH_FAILED") {
        throw new ClientError("AUTH_FAILED", error.message);
      }
      throw new ClientError(
        "PEER_UNREACHABLE",
        describeConnectError(error, `${found.user} at ${where}`, "again in a moment"),
      );
    }
    if (this.#session !== session) {
      await link.fc.close();
      throw new ClientError("NOT_LOGGED_IN", "logged out meanwhile");
    }
    return this.#attachLink(link);
  }

  // ---- chats ---------------------------------------------------------------------------------

  /** Enters a chat with a contact: looks them up and opens a direct link. */
  async openChat(user: string): Promise<void> {
    const session = this.#requireSession();
    if (user.startsWith("#")) return this.#openGroup(user);
    this.#checkName(user);
    if (user.toLowerCase() === session.user.toLowerCase()) {
      throw new ClientError("BAD_MESSAGE", "you cannot chat with yourself");
    }
    const contacts = await this.#contactList();
    const contact = contacts.contacts.find((c) => c.user.toLowerCase() === user.toLowerCase());
    if (!contact) {
      throw new ClientError(
        "NOT_A_CONTACT",
        `${user} is not in your contacts; add them first: contacts add ${user}`,
      );
    }
    if (this.#chatWith) await this.leaveChat();
    let link: PeerLink | undefined;
    try {
      link = await this.#linkTo(contact.user, true);
    } catch (error) {
      const e = asError(error);
      const code = e instanceof ClientError ? e.code : "";
      if (code !== "USER_OFFLINE" && code !== "PEER_UNREACHABLE") throw error;
      this.#emit({
        type: "info",
        text: code === "USER_OFFLINE"
          ? `${contact.user} is offline: your messages wait on the server (*) until they read them`
          : `${e.message}; your messages go to the server (*) until ${contact.user} is back`,
      });
      if (code === "PEER_UNREACHABLE") {
        this.#server?.request({ type: "report_unreachable", user: contact.user }).catch(() => {});
      }
    }
    const name = link?.user ?? contact.user;
    this.#chatWith = name;
    await link?.fc.send({ type: "chat_state", open: true }).catch(() => {});
    const address = link ? `${link.fc.remoteAddr.hostname}:${link.fc.remoteAddr.port}` : "";
    this.#emit({
      type: "chat_opened",
      with: name,
      online: link !== undefined,
      address,
      history: session.store.recent(name, this.#opts.historyLines).map((h) => ({
        id: h.id,
        from: h.sender,
        ts: h.ts,
        text: h.text,
        mark: h.mark,
      })),
    });
  }

  async leaveChat(): Promise<void> {
    if (this.#group !== undefined) {
      this.#groups?.leave(this.#group); // closes it: group_closed, window shut
      this.#group = undefined;
      return;
    }
    const user = this.#chatWith;
    if (!user) throw new ClientError("NOT_IN_CHAT", "you are not in a chat");
    this.#chatWith = undefined;
    const link = this.#links.get(user.toLowerCase());
    await link?.fc.send({ type: "chat_state", open: false }).catch(() => {});
    this.#emit({ type: "chat_closed", with: user });
  }

  /**
   * Sends a line to the current chat. It goes directly to the peer when a link can be had;
   * otherwise (offline, busy in another chat, unreachable) to the server's mailbox. Until one
   * of them acknowledges it, it stays in the local outbox and is sent again later.
   * @returns how it ended: "delivered" (`**`), "stored" (`*`), "queued" or "failed".
   */
  async send(text: string): Promise<Outcome> {
    const session = this.#requireSession();
    if (text.length === 0) throw new ClientError("BAD_COMMAND", "nothing to send");
    if (text.length > MAX_TEXT_LENGTH) {
      throw new ClientError(
        "TOO_LONG",
        `message is ${text.length} characters; the limit is ${MAX_TEXT_LENGTH}`,
      );
    }
    if (this.#group !== undefined && this.#groups) {
      await this.#groups.send(this.#group, text);
      return "delivered";
    }
    const to = this.#chatWith;
    if (!to) throw new ClientError("NOT_IN_CHAT", "open a chat first: chat <user>");
    const message: Outgoing = { id: crypto.randomUUID(), to, ts: Date.now(), text };
    // Written before anything leaves: the history row with an empty mark is the outbox.
    session.store.addMessage({
      id: message.id,
      chat: to,
      sender: session.user,
      ts: message.ts,
      text,
      outgoing: true,
      mark: "",
    });
    this.#emit({ type: "sent", id: message.id, to, ts: message.ts, text });
    return await this.#enqueue(session, message);
  }

  /**
   * Runs `task` after every earlier task for the same recipient: each link carries its
   * messages in the order they were written, 1:1 and group alike.
   */
  #serial<T>(user: string, task: () => Promise<T>): Promise<T> {
    const key = user.toLowerCase();
    const previous = this.#queues.get(key) ?? Promise.resolve();
    const result = previous.then(task);
    const tail: Promise<void> = result.then(() => {}, () => {}).finally(() => {
      if (this.#queues.get(key) === tail) this.#queues.delete(key);
    });
    this.#queues.set(key, tail);
    this.#track(tail);
    return result;
  }

  /** Delivers messages to one recipient one after another, so they keep their order. */
  #enqueue(session: Session, message: Outgoing): Promise<Outcome> {
    this.#inFlight.add(message.id);
    return this.#serial(message.to, () => this.#deliver(session, message))
      .finally(() => this.#inFlight.delete(message.id));
  }

  async #deliver(session: Session, m: Outgoing): Promise<Outcome> {
    if (this.#session !== session) return "queued"; // logged out meanwhile: stays in the outbox
    const direct = await this.#deliverDirect(session, m);
    if (direct.ok) {
      this.#finishDelivery(session, m.id, "**");
      this.#emit({ type: "delivered", id: m.id, to: m.to, ms: Date.now() - m.ts });
      return "delivered";
    }
    try {
      await this.#mailTo(session, m.to, m);
    } catch (error) {
      const e = asError(error);
      if (e instanceof ClientError && e.code === "SERVER_UNREACHABLE") {
        this.#emit({
          type: "queued",
          id: m.id,
          to: m.to,
          reason:
            `${direct.reason}, and the server is unreachable; it will be sent when either is back`,
        });
        return "queued";
      }
      this.#finishDelivery(session, m.id, "!");
      this.#emit({ type: "not_delivered", id: m.id, to: m.to, reason: e.message });
      return "failed";
    }
    this.#finishDelivery(session, m.id, "*");
    this.#emit({ type: "stored", id: m.id, to: m.to, reason: direct.reason });
    return "stored";
  }

  /** Seals a message to `to`'s mail key and hands it to the server. */
  async #mailTo(
    session: Session,
    to: string,
    m: { id: string; ts: number; text: string },
  ): Promise<void> {
    const recipient = await this.#mailKeyOf(to);
    const sealed = await sealMail(
      { from: session.user, to: recipient.user, msgId: m.id, ts: m.ts, text: m.text },
      session.identity,
      recipient.mailKey,
    );
    await this.#request({ type: "mail_send", to, msgId: m.id, ts: m.ts, sealed });
  }

  /** Tries the direct link: a few attempts when it drops, none when the user is away. */
  async #deliverDirect(
    session: Session,
    m: Outgoing,
  ): Promise<{ ok: true } | { ok: false; reason: string }> {
    let reason = `${m.to} is unreachable`;
    let unreachable = false;
    const frame = { type: "msg" as const, id: m.id, seq: this.#seq++, ts: m.ts, text: m.text };
    for (let attempt = 0; attempt < 3; attempt++) {
      if (attempt > 0) await delay(100 * 3 ** (attempt - 1)).catch(() => {});
      if (this.#session !== session || this.#closing) break;
      let link: PeerLink;
      try {
        link = await this.#linkTo(m.to, false);
      } catch (error) {
        const e = asError(error);
        const code = e instanceof ClientError ? e.code : "";
        if (code === "USER_OFFLINE") return { ok: false, reason: `${m.to} is offline` };
        if (code === "PEER_UNREACHABLE") {
          unreachable = true;
          reason = `${m.to} cannot be reached directly`;
          continue;
        }
        return { ok: false, reason: e.message };
      }
      const outcome = await this.#sendOnLink(link, frame);
      if (outcome === "ack") return { ok: true };
      if (outcome === "busy") return { ok: false, reason: `${m.to} is busy in another chat` };
      if (outcome === "timeout") {
        // A live link that does not answer: hand the message to the server; the receiver drops
        // it as a duplicate should the direct copy arrive after all.
        return { ok: false, reason: `${m.to} did not acknowledge in time` };
      }
      reason = `${m.to} disconnected`;
      unreachable = true;
    }
    if (unreachable) {
      // The directory may still think they are online: let the server check.
      this.#server?.request({ type: "report_unreachable", user: m.to }).catch(() => {});
    }
    return { ok: false, reason };
  }

  /** Sends one chat frame and waits for the peer's answer or the link's end. */
  async #sendOnLink(
    link: PeerLink,
    frame: OutgoingMessage & { id: string },
  ): Promise<"ack" | "busy" | "dropped" | "timeout"> {
    const answer = Promise.withResolvers<"ack" | "busy">();
    // Keyed by peer too: a group message has one id and goes to every member at once.
    const key = ackKey(link.user, frame.id);
    this.#acks.set(key, { resolve: answer.resolve });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.#opts.ackTimeoutMs);
    });
    try {
      await link.fc.send(frame);
      return await Promise.race([
        answer.promise,
        timeout,
        link.fc.closed.then(() => "dropped" as const),
      ]);
    } catch {
      return "dropped";
    } finally {
      clearTimeout(timer);
      this.#acks.delete(key);
    }
  }

  /** Sends again what is still in the outbox (after a restart, or when the server is back). */
  #flushOutbox(session: Session): void {
    for (const entry of session.store.outbox()) {
      if (this.#inFlight.has(entry.id)) continue;
      void this.#enqueue(session, {
        id: entry.id,
        to: entry.chat,
        ts: entry.ts,
        text: entry.text,
      }).catch(() => {});
    }
  }

  // ---- groups, history, search ---------------------------------------------------------------

  #makeGroups(session: Session): GroupChats {
    // deno-lint-ignore no-this-alias
    const core = this;
    return new GroupChats({
      user: session.user,
      store: session.store,
      emit: (event) => this.#emit(event),
      link: (user) => this.#linkTo(user, false),
      openLink: (user) => {
        const link = this.#links.get(user.toLowerCase());
        return link && !link.fc.isClosed ? link : undefined;
      },
      sendOnLink: (link, frame) => this.#sendOnLink(link, frame),
      serial: (user, task) => this.#serial(user, task),
      mail: async (to, message) => {
        try {
          await this.#mailTo(session, to, message);
          return "stored";
        } catch {
          return "failed";
        }
      },
      setCurrent: (id) => {
        if (id !== undefined && this.#chatWith !== undefined) {
          // A 1:1 chat turning into a group: the window becomes the group's.
          const partner = this.#links.get(this.#chatWith.toLowerCase());
          partner?.fc.send({ type: "chat_state", open: false }).catch(() => {});
          this.#chatWith = undefined;
        }
        this.#group = id;
      },
      get current() {
        return core.#group;
      },
      get chatPartner() {
        return core.#chatWith;
      },
    });
  }

  /** `chat #handle`: opens the window of a group I am in. */
  #openGroup(handle: string): void {
    const group = this.#groups?.find(handle);
    if (!group) {
      throw new ClientError(
        "NO_SUCH_GROUP",
        `you are not in a group ${handle}; groups lists yours`,
      );
    }
    if (this.#chatWith) {
      const partner = this.#links.get(this.#chatWith.toLowerCase());
      partner?.fc.send({ type: "chat_state", open: false }).catch(() => {});
      this.#emit({ type: "chat_closed", with: this.#chatWith });
      this.#chatWith = undefined;
    }
    this.#group = group.id;
    const session = this.#requireSession();
    this.#emit({
      type: "group_opened",
      group: group.id,
      handle: groupHandle(group.id),
      by: session.user,
      members: this.#groups!.members(group.id),
      history: session.store.recent(groupChat(group.id), this.#opts.historyLines).map((h) => ({
        id: h.id,
        from: h.sender,
        ts: h.ts,
        text: h.text,
        mark: h.mark,
      })),
    });
  }

  #makeTransfers(session: Session): Transfers {
    const dir = this.#userDir(session.user);
    return new Transfers({
      user: session.user,
      store: session.store,
      emit: (event) => this.#emit(event),
      link: (user) => this.#linkTo(user, false),
      downloadsDir: join(dir, "downloads"),
      partialDir: join(dir, "partial"),
      maxFileSize: this.#opts.maxFileSize,
    });
  }

  /**
   * `/s <path>` (or `share <path>`) in a chat: sends the file to the other user, or to every
   * member of the group, directly. Resolves when every transfer has ended (well or not).
   */
  async share(path: string): Promise<void> {
    this.#requireSession();
    const transfers = this.#transfers!;
    let peers: string[];
    let group: string | undefined;
    if (this.#group !== undefined) {
      group = this.#group;
      peers = this.#groups!.members(group).filter((m) =>
        m.toLowerCase() !== this.#session!.user.toLowerCase()
      );
    } else if (this.#chatWith !== undefined) {
      peers = [this.#chatWith];
    } else {
      throw new ClientError("NOT_IN_CHAT", "open a chat first, then /s <path>");
    }
    try {
      await transfers.share(path, peers, group);
    } catch (error) {
      if (error instanceof TransferError) throw new ClientError(error.code, error.message);
      throw error;
    }
  }

  /** `/u`: my contacts who are online now. */
  async onlineContacts(): Promise<string[]> {
    this.#requireSession();
    const reply = await this.#contactList();
    const online = reply.contacts.filter((c) => c.online).map((c) => c.user);
    this.#emit({ type: "online_contacts", contacts: online });
    return online;
  }

  /**
   * `/a <user>`: adds an online contact to the open chat; a 1:1 chat becomes a group. Refused,
   * with the group unchanged, for an unknown user, a non-contact, someone offline or out of
   * reach.
   */
  async addToChat(user: string): Promise<void> {
    const session = this.#requireSession();
    this.#checkName(user);
    if (!this.inChat) throw new ClientError("NOT_IN_CHAT", "open a chat first: chat <user>");
    if (user.toLowerCase() === session.user.toLowerCase()) {
      throw new ClientError("BAD_COMMAND", "you are in the chat already");
    }
    const found = await this.#lookup(user); // NO_SUCH_USER, KEY_CHANGED
    const contacts = await this.#contactList();
    const contact = contacts.contacts.find((c) => c.user.toLowerCase() === user.toLowerCase());
    if (!contact) {
      throw new ClientError(
        "NOT_A_CONTACT",
        `${found.user} is not in your contacts (contacts add ${found.user}); nobody was added`,
      );
    }
    if (!found.online) {
      throw new ClientError("USER_OFFLINE", `${found.user} is offline; nobody was added`);
    }
    await this.#linkTo(found.user, true); // reachable, and proven to be who they are
    try {
      await this.#groups!.add(found.user);
    } catch (error) {
      if (error instanceof GroupError) throw new ClientError(error.code, error.message);
      throw error;
    }
  }

  /** Groups I am in, and those I was in. */
  listGroups(): void {
    const session = this.#requireSession();
    const active = new Set(this.#groups?.active().map((g) => g.id) ?? []);
    this.#emit({
      type: "groups",
      groups: session.store.groups().map((g) => ({
        id: g.id,
        handle: groupHandle(g.id),
        members: active.has(g.id) ? this.#groups!.members(g.id) : g.members,
        active: active.has(g.id),
        joinedAt: g.joinedAt,
      })),
    });
  }

  /** `history <user|#group> [n]`: the last `n` messages of a chat, from local history. */
  history(target: string, limit = this.#opts.historyLines): void {
    const session = this.#requireSession();
    let chat: string;
    if (target.startsWith("#")) {
      const id = this.#groups?.find(target)?.id ??
        session.store.groups().find((g) => groupHandle(g.id) === target.toLowerCase())?.id;
      if (!id) throw new ClientError("NO_SUCH_GROUP", `no group ${target} in your history`);
      chat = groupChat(id);
    } else {
      this.#checkName(target);
      chat = target;
    }
    this.#emit({
      type: "history",
      chat: target,
      entries: session.store.recent(chat, limit).map((h) => ({
        id: h.id,
        from: h.sender,
        ts: h.ts,
        text: h.text,
        mark: h.mark,
        outgoing: h.outgoing,
      })),
    });
  }

  /** `search <words>`: messages containing all the words (full text), newest first. */
  search(words: string[], limit = 50): void {
    const session = this.#requireSession();
    if (words.length === 0) throw new ClientError("BAD_COMMAND", "usage: search <words>");
    const chatName = (chat: string) => chat.startsWith("g:") ? groupHandle(chat.slice(2)) : chat;
    this.#emit({
      type: "search_results",
      query: words.join(" "),
      results: session.store.search(words, limit).map((h) => ({
        id: h.id,
        chat: chatName(h.chat),
        from: h.sender,
        ts: h.ts,
        text: h.text,
        mark: h.mark,
      })),
    });
  }

  // ---- offline mail --------------------------------------------------------------------------

  /** Who has pending messages for me on the server. */
  async hanging(): Promise<MailboxEntry[]> {
    this.#requireSession();
    const reply = await this.#request<Extract<ServerMessage, { type: "hanging_list" }>>({
      type: "hanging",
    });
    this.#emit({ type: "hanging", entries: reply.entries });
    return reply.entries;
  }

  /**
   * Fetches the pending messages from `user`, stores them, and only then confirms them to the
   * server (which deletes them and tells the sender they were read). A crash in between shows
   * them again next time; the local store drops the duplicates by id.
   */
  async show(user: string): Promise<number> {
    const session = this.#requireSession();
    this.#checkName(user);
    const mailKey = session.mailKey;
    if (!mailKey) {
      throw new ClientError(
        "NO_MAIL_KEY",
        `no mail key on this device: messages sealed to you cannot be opened here`,
      );
    }
    // The sender's identity key, checked against the pin: it must have signed each message.
    const sender = await this.#lookup(user);
    let shown = 0;
    for (let round = 0; round < 10_000; round++) {
      const batch = await this.#request<Extract<ServerMessage, { type: "mail_batch" }>>({
        type: "show",
        from: sender.user,
      });
      const rejected: string[] = [];
      for (const m of batch.messages) {
        let text: string;
        try {
          text = (await openMail(m.sealed, { user: session.user, mailKey }, {
            from: batch.from,
            msgId: m.msgId,
            ts: m.ts,
          }, sender.publicKey)).text;
        } catch (error) {
          if (!(error instanceof MailRejected)) throw error;
          rejected.push(m.msgId);
          this.#emit({
            type: "error",
            code: "MAIL_REJECTED",
            message: `a message said to be from ${batch.from} was discarded: ${error.message}`,
          });
          continue;
        }
        // Stored once; shown again if a crash before the confirm brings it back (the user may
        // not have seen it), but never a second row in history.
        session.store.addMessage({
          id: m.msgId,
          chat: batch.from,
          sender: batch.from,
          ts: m.ts,
          text,
          outgoing: false,
          mark: "**",
        });
        shown++;
        this.#emit({
          type: "message",
          id: m.msgId,
          from: batch.from,
          ts: m.ts,
          text,
          inChat: this.#chatWith?.toLowerCase() === batch.from.toLowerCase(),
          via: "server",
        });
      }
      if (batch.messages.length === 0) break;
      if (Deno.env.get("CONFAB_FAULT") === "crash-before-mail-confirm") {
        Deno.kill(Deno.pid, "SIGKILL"); // tests: die between storing and confirming
      }
      await this.#request({
        type: "mail_confirm",
        from: batch.from,
        msgIds: batch.messages.map((m) => m.msgId),
        ...(rejected.length > 0 ? { rejected } : {}),
      });
      if (!batch.more) break;
    }
    this.#emit({ type: "shown", from: user, count: shown });
    return shown;
  }

  /** Read receipts from the server: our `*` messages were read; they become `**`. */
  #onReceipts(items: { msgId: string; reader: string; readAt: number }[]): void {
    const session = this.#session;
    if (!session) return;
    const byReader = new Map<string, string[]>();
    for (const item of items) {
      session.store.setMark(item.msgId, "**");
      const ids = byReader.get(item.reader) ?? [];
      ids.push(item.msgId);
      byReader.set(item.reader, ids);
    }
    for (const [reader, ids] of byReader) {
      const readAt = Math.max(...items.filter((i) => i.reader === reader).map((i) => i.readAt));
      this.#emit({ type: "read", by: reader, ids, readAt });
    }
    this.#server?.request({ type: "receipts_ack", msgIds: items.map((i) => i.msgId) })
      .catch(() => {});
  }

  #finishDelivery(session: Session, id: string, mark: DeliveryMark): void {
    if (this.#session === session) session.store.setMark(id, mark);
  }

  #track(task: Promise<unknown>): void {
    this.#linkTasks.add(task);
    void task.catch(() => {}).finally(() => this.#linkTasks.delete(task));
  }

  /** Leaves the chat, logs out if possible, closes every link and the listener. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#session) {
        try {
          await this.logout();
        } catch { /* closing anyway */ }
      }
      this.#abort.abort(new ConnectionClosedError("client is closing"));
      try {
        this.#listener?.close();
      } catch { /* closed */ }
      await this.#acceptLoop;
      await Promise.all([...this.#links.values()].map((l) => l.fc.close()));
      await this.#server?.close();
      await Promise.allSettled([...this.#dialing.values()]);
      while (this.#linkTasks.size > 0) await Promise.allSettled([...this.#linkTasks]);
      this.#emit({ type: "bye" });
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

export type { ClientEvent };
