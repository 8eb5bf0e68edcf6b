/**
 * The client's server session room: the control connection (connect, re-attach after the
 * server went away, reconnect with backoff), accounts (signup, login, logout), contacts, and
 * the directory (lookups checked against pinned keys, mail keys checked against signatures).
 * Pushes from the server are handed to the core, which routes them to the room that owns them.
 */
import { join } from "../util/paths.ts";
import { asError, type FramedConnection } from "../net/framed_connection.ts";
import type { ResumptionOffer } from "../net/secure_channel.ts";
import {
  ConnectionClosedError,
  ProtocolError,
  RemoteError,
  TimeoutError,
} from "../protocol/errors.ts";
import {
  HASH_REQUEST_TIMEOUT_MS,
  type LookupResultMessage,
  type ServerMessage,
  USERNAME_PATTERN,
  type WelcomeMessage,
} from "../protocol/messages.ts";
import { Identity } from "../peer/identity.ts";
import { delay } from "../util/time.ts";
import { ClientStore } from "./client_store.ts";
import { describeFix } from "../util/owner_only.ts";
import { KnownServers } from "./known_servers.ts";
import {
  CONTROL_HEARTBEAT,
  openServerLink,
  reconnectWaits,
  resumeSession,
  resumptionFrom,
  ServerKeyChangedError,
  type ServerLink,
} from "./server_link.ts";
import { generateKeyPair, type KeyPair } from "../crypto/noise.ts";
import { isStrongPublicKey, mailKeyStatement, verifySignature } from "../crypto/ed25519.ts";
import { ownNumber, safetyNumber } from "../crypto/fingerprint.ts";
import { MailKey } from "../peer/sealed_mail.ts";
import { type ClientContext, ClientError, describeConnectError } from "./context.ts";
import type { ServerAccess } from "./link_paths.ts";

/** A logged-in user: who, the token to re-attach with, keys, and local state. */
export interface Session {
  user: string;
  token: string;
  identity: Identity;
  /** Opens offline mail sealed to us; missing if this home lost it. */
  mailKey: MailKey | undefined;
  store: ClientStore;
  /** Our address as the server sees it (what it gives our contacts in a lookup). */
  seenAs: string;
  /** The server's last resumption ticket: the next re-attach is a cheaper handshake. */
  resumption?: ResumptionOffer;
}

/** What the session room needs from the client core. */
export interface ServerSessionHost {
  /** The peer port to announce to the server. */
  announcePort(): number;
  /** A push from the server (presence, receipts, mail notices...), after any login settled. */
  onPush(message: ServerMessage): void | Promise<void>;
  /** A login succeeded: the rooms that live with a session start (before `logged_in`). */
  onLogin(session: Session): Promise<void>;
  /** The session can deliver: after `logged_in`, and after each re-attach. */
  onReady(session: Session): void;
  /** The session ended: close what it had open (its store is closed after this). */
  onEnd(session: Session): void;
}

export interface ServerAddress {
  host: string;
  port: number;
}

/** A peer link from `user`, who is not a mutual contact: refused (the dialer is told why). */
export class NotAContactError extends ProtocolError {
  override name = "NotAContactError";
  constructor(readonly user: string, me: string) {
    super(
      "NOT_A_CONTACT",
      `${me} has not accepted you as a contact; nothing was sent (contacts add ${me} asks them)`,
    );
  }
}

/** The contact list: mutual contacts (with who is online) and unanswered requests. */
export type ContactBook = Pick<
  Extract<ServerMessage, { type: "contact_list" }>,
  "contacts" | "requested" | "requests"
>;

export interface ServerSessionOptions {
  home: string;
  /**
   * The server's addresses: instances of one service. The client uses the first that answers
   * and, when it is lost, re-attaches to the next with its session token.
   */
  servers: readonly ServerAddress[];
  /** A fingerprint the user accepts for a changed server key: used once, then forgotten. */
  acceptServerKey?: string;
}

const LOGOUT_SETTING = "pending_logout";
/** How long a lookup made for sending is reused for the next messages to the same user. */
const SEND_LOOKUP_TTL_MS = 2_000;

export class ServerSession {
  readonly #ctx: ClientContext;
  readonly #host: ServerSessionHost;
  readonly #opts: ServerSessionOptions;
  #server: FramedConnection<ServerMessage> | undefined;
  #servers: ServerAddress[];
  /** The address in use, or to try first. */
  #current = 0;
  /** The address (resolved) the control connection was made to. */
  #connectedTo: ServerAddress | undefined;
  #session: Session | undefined;
  #reconnecting: Promise<void> | undefined;
  #loggingIn: Promise<void> | undefined;
  /** The server said it is closing (a restart, most likely): come back soon, spread out. */
  #closingAnnounced = false;
  #connecting: Promise<FramedConnection<ServerMessage>> | undefined;
  readonly #sendLookups = new Map<string, { result: LookupResultMessage; at: number }>();
  /** Mail keys whose signature by their owner's identity key was checked already. */
  readonly #vouchedMailKeys = new Set<string>();
  /** Static key for Noise handshakes, made per process: users prove who they are inside. */
  #noiseKey: Promise<KeyPair> | undefined;
  readonly #knownServers: KnownServers;
  /** A fingerprint the user accepts for a changed server key, until one connection used it. */
  #acceptServerKey: string | undefined;
  /** The key the server presented on the control connection (base64url). */
  #serverKey: string | undefined;
  /** When the control connection last came back after a loss (0: never). */
  #reattachedAt = 0;

  constructor(ctx: ClientContext, host: ServerSessionHost, options: ServerSessionOptions) {
    this.#ctx = ctx;
    this.#host = host;
    this.#opts = options;
    if (options.servers.length === 0) throw new RangeError("no server address given");
    this.#servers = [...options.servers];
    this.#knownServers = new KnownServers(options.home);
    this.#acceptServerKey = options.acceptServerKey;
  }

  /** `in user password PORT`: that port for every address of the server. */
  #usePort(port: number): void {
    this.#servers = this.#servers.map((s) => ({ host: s.host, port }));
  }

  /** The logged-in session, if any. */
  get current(): Session | undefined {
    return this.#session;
  }

  /** The home folder: one subfolder per user. */
  get home(): string {
    return this.#opts.home;
  }

  /** The address in use (or to try first), as `host:port`. */
  get serverAddress(): string {
    return addressOf(this.#servers[this.#current]!);
  }

  get connected(): boolean {
    return this.#server !== undefined && !this.#server.isClosed;
  }

  /**
   * Whether the server is away, or came back less than `ms` ago: others may still be
   * re-attaching then, so "offline" may only mean "not back yet".
   */
  unsettled(ms: number): boolean {
    return !this.connected || Date.now() - this.#reattachedAt < ms;
  }

  /** The session, or a NOT_LOGGED_IN error for the user. */
  require(): Session {
    if (!this.#session) {
      throw new ClientError("NOT_LOGGED_IN", "log in first: in <user> <password>");
    }
    return this.#session;
  }

  /** This process's static Noise key, made on first use. */
  async staticKey(): Promise<KeyPair> {
    this.#noiseKey ??= generateKeyPair();
    return await this.#noiseKey;
  }

  // ---- control connection --------------------------------------------------------------------

  #connect(): Promise<FramedConnection<ServerMessage>> {
    if (this.#server && !this.#server.isClosed) return Promise.resolve(this.#server);
    this.#connecting ??= this.#open().finally(() => (this.#connecting = undefined));
    return this.#connecting;
  }

  /**
   * Connects to the first address that answers, starting with the current one. A host name
   * that resolves to several addresses is tried at each of them; the key is pinned under the
   * name as given.
   */
  async #open(): Promise<FramedConnection<ServerMessage>> {
    let link: ServerLink | undefined;
    let failure: ClientError | undefined;
    for (let tried = 0; tried < this.#servers.length && !link; tried++) {
      const index = (this.#current + tried) % this.#servers.length;
      const server = this.#servers[index]!;
      const where = `server ${addressOf(server)}`;
      for (const ip of await resolveAll(server.host)) {
        try {
          link = await openServerLink({
            host: ip,
            port: server.port,
            pinAs: addressOf(server),
            serviceKey: await this.#serviceKey(server),
            staticKeyPair: await this.staticKey(),
            knownServers: this.#knownServers,
            acceptKey: this.#acceptServerKey,
            // Re-attaching: the ticket of the last welcome, if the server gave one.
            resumption: this.#session?.resumption,
            signal: AbortSignal.any([this.#ctx.signal, AbortSignal.timeout(10_000)]),
          });
          this.#current = index;
          this.#connectedTo = { host: ip, port: server.port };
          break;
        } catch (error) {
          if (error instanceof ServerKeyChangedError) {
            throw new ClientError("SERVER_KEY_CHANGED", error.message);
          }
          const code = error instanceof ProtocolError && error.code === "VERSION_MISMATCH"
            ? "VERSION_MISMATCH"
            : "SERVER_UNREACHABLE";
          const hint = this.#servers.length > 1
            ? "--server HOST:PORT,HOST:PORT"
            : "--server HOST:PORT";
          failure ??= new ClientError(code, describeConnectError(error, where, hint), {
            cause: error,
          });
          if (code === "VERSION_MISMATCH" || this.#ctx.signal.aborted) throw failure;
        }
      }
    }
    if (!link) throw failure!;
    const where = `server ${this.serverAddress}`;
    // The override is for the key the user checked, once: a later reconnect that meets yet
    // another key is refused like any other.
    this.#acceptServerKey = undefined;
    if (link.pin === "new") {
      this.#ctx.emit({
        type: "info",
        text: `first contact with ${where}: pinned its key (fingerprint ${link.fingerprint})`,
      });
    }
    const fc = link.fc;
    this.#serverKey = link.serverKey;
    fc.setHandler((m) => this.#onMessage(m));
    // Logged in already: this is a re-attach. Resume before anyone else uses the link, so a
    // command typed meanwhile never runs on a connection without our session.
    const session = this.#session;
    if (session) {
      try {
        // Each resume hands out a new token: the old one dies once this one is used.
        const welcome = await resumeSession(fc, session.token, this.#host.announcePort());
        session.token = welcome.token;
        session.seenAs = welcome.host;
        session.resumption = resumptionFrom(
          welcome,
          link.serverKey,
          link.resumed ? session.resumption : undefined,
        );
      } catch (error) {
        await fc.close();
        if (error instanceof RemoteError && error.code === "BAD_TOKEN") {
          this.end(error.message);
          throw new ClientError("BAD_TOKEN", error.message);
        }
        throw new ClientError("SERVER_UNREACHABLE", `${where}: could not re-attach`, {
          cause: error,
        });
      }
    }
    this.#server = fc;
    if (session) this.#reattachedAt = Date.now();
    fc.startHeartbeat(CONTROL_HEARTBEAT); // (already running after a resume: a no-op then)
    const closed = fc.closed.then((reason) => this.#onClosed(fc, reason));
    this.#ctx.track(closed);
    if (session && this.#session === session) {
      this.#ctx.emit({ type: "server_back", resumed: true, server: this.serverAddress });
      this.#host.onReady(session);
    }
    return fc;
  }

  async #onMessage(m: ServerMessage): Promise<void> {
    // Pushes that follow a login (mail summary, receipts) wait until the login is settled,
    // so they are handled with the session in place and shown after "logged in".
    if (this.#loggingIn) await this.#loggingIn;
    if (m.type === "presence" || m.type === "contact_update") {
      this.#sendLookups.delete(m.user.toLowerCase());
    }
    if (m.type === "server_closing") this.#closingAnnounced = true;
    if (m.type === "error" && m.code === "ALREADY_LOGGED_IN") {
      this.end(`server: ${m.message}`);
      return;
    }
    await this.#host.onPush(m);
  }

  #onClosed(fc: FramedConnection<ServerMessage>, reason: Error | undefined): void {
    if (this.#server !== fc) return;
    this.#server = undefined;
    if (this.#ctx.closing || !this.#session) return;
    this.#ctx.emit({
      type: "server_lost",
      reason: reason ? reason.message : "the server closed the connection",
    });
    // The address just lost is likely down: the next one is tried first.
    this.#current = (this.#current + 1) % this.#servers.length;
    this.#reconnecting ??= this.#reconnect().finally(() => (this.#reconnecting = undefined));
    this.#ctx.track(this.#reconnecting);
  }

  /** The key another address of this service is pinned with, for an address not pinned yet. */
  async #serviceKey(
    server: ServerAddress,
  ): Promise<{ key: string; pinnedAs: string } | undefined> {
    for (const other of this.#servers) {
      if (other === server) continue;
      const pinned = await this.#knownServers.get(addressOf(other));
      if (pinned) return { key: pinned.key, pinnedAs: addressOf(other) };
    }
    return undefined;
  }

  /** Re-attaches with the session token, with exponential backoff, until it works. */
  async #reconnect(): Promise<void> {
    const waits = reconnectWaits(this.#closingAnnounced);
    this.#closingAnnounced = false;
    let warned = false;
    while (this.#session && !this.#ctx.closing) {
      try {
        await delay(waits.next().value, this.#ctx.signal);
      } catch {
        return; // closing
      }
      if (!this.#session) return;
      try {
        await this.#connect(); // re-attaches with the session token
        return;
      } catch (error) {
        if (error instanceof ClientError && error.code === "BAD_TOKEN") return;
        if (error instanceof ClientError && error.code === "SERVER_KEY_CHANGED") {
          // Something else answers at the server's address: warn once, and keep trying, for
          // the real server may come back. The session token only ever goes to the pinned key.
          if (!warned) this.#ctx.emit({ type: "error", code: error.code, message: error.message });
          warned = true;
        }
      }
    }
  }

  /** Sends a request on the control connection (connecting first if needed). */
  async request<R extends ServerMessage>(
    message: { type: string; [k: string]: unknown },
    options: { timeoutMs?: number } = {},
  ): Promise<R> {
    const fc = await this.#connect();
    try {
      return await fc.request<R>(message, options);
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

  /** Sends a request only if the server is connected now, without waiting for the answer. */
  tell(message: { type: string; [k: string]: unknown }): void {
    this.#server?.request(message).catch(() => {});
  }

  /** Asks the server to check whether `user` is still there (their link went silent). */
  reportUnreachable(user: string): void {
    this.tell({ type: "report_unreachable", user });
  }

  /**
   * What a second connection to this server needs (a relay leg, a NAT probe): its address,
   * our static key (which the server matches against the control connection's), and the key
   * the server must present.
   * @throws {ClientError} SERVER_UNREACHABLE when the server cannot be reached.
   */
  async access(): Promise<ServerAccess> {
    if (this.#serverKey === undefined) await this.#connect();
    return {
      // The instance holding the control connection (a relay leg must meet it there).
      host: this.#connectedTo?.host ?? this.#servers[this.#current]!.host,
      port: this.#connectedTo?.port ?? this.#servers[this.#current]!.port,
      staticKeyPair: await this.staticKey(),
      serverKey: this.#serverKey!,
      signal: this.#ctx.signal,
    };
  }

  /** Closes the control connection (the client is closing). */
  async close(): Promise<void> {
    await this.#server?.close();
  }

  // ---- accounts ------------------------------------------------------------------------------

  userDir(user: string): string {
    return join(this.#opts.home, user.toLowerCase());
  }

  checkName(user: string): void {
    if (!USERNAME_PATTERN.test(user)) {
      throw new ClientError(
        "BAD_USERNAME",
        `"${user.slice(0, 40)}" is not a valid username: 1-32 letters, digits, _ - .`,
      );
    }
  }

  #noAccountHere(user: string): ClientError {
    return new ClientError(
      "NO_IDENTITY",
      `there is no account ${user} on this device (${this.#opts.home}): sign up with ` +
        `signup ${user}, or if you signed up elsewhere, start with --home <that folder>`,
    );
  }

  /**
   * Checks, before a password is asked for, that `user` could sign up (`signup`) or log in
   * from this home (`in`): a valid name, nobody logged in, and for `in` the user's keys here.
   * @throws {ClientError} BAD_USERNAME, ALREADY_LOGGED_IN, NO_IDENTITY
   */
  async checkAccount(user: string, verb: "signup" | "in"): Promise<void> {
    this.checkName(user);
    if (this.#session) {
      throw new ClientError("ALREADY_LOGGED_IN", `already logged in as ${this.#session.user}`);
    }
    if (verb === "signup") return;
    await finishKeyMoves(this.userDir(user));
    try {
      await Deno.stat(join(this.userDir(user), "identity.json"));
    } catch {
      throw this.#noAccountHere(user);
    }
  }

  /**
   * Creates an account (and its identity key), then logs in. The keys are written before the
   * request goes out and kept when no answer comes: the server may have made the account, and
   * the same signup again (same keys, same password) is then answered as done.
   */
  async signup(user: string, password: string, serverPort?: number): Promise<void> {
    this.checkName(user);
    if (this.#session) throw new ClientError("ALREADY_LOGGED_IN", "log out first (out)");
    if (serverPort !== undefined) this.#usePort(serverPort);
    const dir = this.userDir(user);
    const pending = join(dir, "signup-pending");
    await finishKeyMoves(dir);
    const { identity, mailKey } = await pendingKeys(pending);
    const mailKeySig = await identity.sign(mailKeyStatement(user, mailKey.publicKey));
    this.#ctx.emit({ type: "info", text: `creating account ${user} on ${this.serverAddress}` });
    // A server that cannot be reached says so as such; only a request sent can be unanswered.
    await this.#connect();
    try {
      await this.request({
        type: "signup",
        user,
        password,
        publicKey: identity.publicKey,
        mailKey: mailKey.publicKey,
        mailKeySig,
      }, { timeoutMs: HASH_REQUEST_TIMEOUT_MS });
    } catch (error) {
      if (error instanceof ClientError && error.code === "SERVER_UNREACHABLE") {
        throw new ClientError(
          "SERVER_UNREACHABLE",
          `no answer from ${this.serverAddress} to the signup of ${user}: the account may ` +
            `have been made; type the same signup again to finish it`,
        );
      }
      // Kept even when refused: a retry with a mistyped password is refused too, and must
      // not lose the keys of the account its first try made.
      throw error;
    }
    await moveKeys(dir);
    this.#ctx.emit({ type: "signed_up", user });
    await this.login(user, password);
  }

  async login(user: string, password: string, serverPort?: number): Promise<void> {
    this.checkName(user);
    if (this.#session) {
      throw new ClientError("ALREADY_LOGGED_IN", `already logged in as ${this.#session.user}`);
    }
    if (serverPort !== undefined) this.#usePort(serverPort);
    await finishKeyMoves(this.userDir(user));
    const identity = await Identity.load(join(this.userDir(user), "identity.json"));
    if (!identity) throw this.#noAccountHere(user);
    const store = new ClientStore(this.userDir(user));
    if (store.fixedMode) {
      this.#ctx.emit({ type: "info", text: describeFix(store.fixedMode, "your folder") });
    }
    const settled = Promise.withResolvers<void>();
    this.#loggingIn = settled.promise;
    try {
      const saved = store.getSetting(LOGOUT_SETTING);
      this.#ctx.emit({ type: "info", text: `logging in to ${this.serverAddress} as ${user}` });
      const welcome = await this.request<WelcomeMessage>({
        type: "login",
        user,
        password,
        peerPort: this.#host.announcePort(),
        ...(saved ? { lastLogout: Number(saved) } : {}),
      }, { timeoutMs: HASH_REQUEST_TIMEOUT_MS });
      if (saved) store.setSetting(LOGOUT_SETTING, undefined);
      const mailKey = await MailKey.load(join(this.userDir(user), "mail-key.json"));
      const session: Session = {
        user: welcome.user,
        token: welcome.token,
        identity,
        mailKey,
        store,
        seenAs: welcome.host,
        resumption: this.#serverKey ? resumptionFrom(welcome, this.#serverKey) : undefined,
      };
      this.#session = session;
      await this.#host.onLogin(session);
      if (!mailKey) {
        this.#ctx.emit({
          type: "error",
          code: "NO_MAIL_KEY",
          message: `no mail key in ${this.userDir(user)}: offline messages to you cannot be ` +
            `opened on this device (copy mail-key.json from where you signed up)`,
        });
      }
      this.#ctx.emit({
        type: "logged_in",
        user: welcome.user,
        server: this.serverAddress,
        resumed: false,
      });
      this.#host.onReady(session);
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
    const session = this.require();
    let savedLocally = false;
    const at = Date.now();
    try {
      if (!this.connected) throw new Error("not connected");
      await this.#server!.request({ type: "logout" }, { timeoutMs: 3000 });
    } catch {
      session.store.setSetting(LOGOUT_SETTING, String(at));
      savedLocally = true;
    }
    this.end();
    this.#ctx.emit({ type: "logged_out", user: session.user, savedLocally, at });
  }

  /**
   * Ends the session without a word to the server, for a quit that cannot wait for it: the
   * logout time is kept and sent with the next login, as when the server is away.
   */
  abandon(): void {
    const session = this.#session;
    if (!session) return;
    const at = Date.now();
    session.store.setSetting(LOGOUT_SETTING, String(at));
    this.end();
    this.#ctx.emit({ type: "logged_out", user: session.user, savedLocally: true, at });
  }

  /**
   * Forgets the session: closes links, the store; the server connection stays for reuse.
   * With a reason (the server ended it: replaced, expired), says so as `logged_out`.
   */
  end(reason?: string): void {
    const session = this.#session;
    if (!session) return;
    if (reason !== undefined) {
      this.#ctx.emit({ type: "error", code: "SESSION_ENDED", message: reason });
      this.#ctx.emit({
        type: "logged_out",
        user: session.user,
        savedLocally: false,
        at: Date.now(),
      });
    }
    this.#session = undefined;
    this.#host.onEnd(session);
    session.store.close();
  }

  // ---- contacts and directory ----------------------------------------------------------------

  /** My contact list from the server, with who is online. */
  contactList(): Promise<Extract<ServerMessage, { type: "contact_list" }>> {
    return this.request({ type: "contacts" });
  }

  async contacts(): Promise<ContactBook> {
    this.require();
    const { contacts, requested, requests } = await this.contactList();
    this.#ctx.emit({ type: "contacts", contacts, requested, requests });
    return { contacts, requested, requests };
  }

  /** Sets a new password on the server, proving the current one. */
  async changePassword(current: string, next: string): Promise<void> {
    const session = this.require();
    await this.request({ type: "password_change", password: current, newPassword: next });
    this.#ctx.emit({ type: "password_changed", user: session.user });
  }

  /**
   * Sends `user` a contact request, or accepts theirs.
   * @returns whether we are now contacts both ways.
   */
  async addContact(user: string): Promise<boolean> {
    this.require();
    this.checkName(user);
    const reply = await this.request<Extract<ServerMessage, { type: "contact_result" }>>({
      type: "contact_add",
      user,
    });
    this.#sendLookups.delete(reply.user.toLowerCase());
    const mutual = reply.state === "mutual";
    this.#ctx.emit({ type: "contact_added", user: reply.user, mutual });
    return mutual;
  }

  /**
   * Ends a contact (both ways), declines `user`'s request or withdraws mine.
   * @returns what it was.
   */
  async removeContact(user: string): Promise<"removed" | "declined" | "withdrawn"> {
    this.require();
    this.checkName(user);
    const reply = await this.request<Extract<ServerMessage, { type: "contact_result" }>>({
      type: "contact_remove",
      user,
    });
    this.#sendLookups.delete(reply.user.toLowerCase());
    const state = reply.state === "declined" || reply.state === "withdrawn"
      ? reply.state
      : "removed";
    this.#ctx.emit({ type: "contact_removed", user: reply.user, state });
    return state;
  }

  /**
   * Looks a user up and checks their identity key against the one pinned at first contact.
   * @throws {ClientError} KEY_CHANGED (and says so loudly) when it differs.
   */
  async lookup(user: string): Promise<LookupResultMessage> {
    const session = this.require();
    const result = await this.request<LookupResultMessage>({ type: "lookup", user });
    if (!isStrongPublicKey(result.publicKey)) {
      // Only a lying server gives one: a small-order key would let anyone pass as that user.
      throw new ClientError(
        "AUTH_FAILED",
        `the directory gives ${result.user} an invalid identity key (small order or not ` +
          `canonical); nothing is sent to or accepted from ${result.user}`,
      );
    }
    const before = session.store.rememberKey(result.user, result.publicKey);
    if (before !== undefined && before !== result.publicKey) {
      this.#ctx.emit({ type: "key_changed", user: result.user });
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
   * The identity key pinned for `user`, else the directory's (a lookup, which pins it); undefined
   * when neither can be had now (server away, unknown user, key changed).
   */
  async keyOf(user: string): Promise<string | undefined> {
    const pinned = this.current?.store.knownKey(user);
    if (pinned !== undefined) return pinned;
    try {
      return (await this.lookup(user)).publicKey;
    } catch {
      return undefined;
    }
  }

  /**
   * A lookup for sending: a burst of messages to someone away reuses one answer for a couple of
   * seconds instead of asking the server again for each (a presence change drops it at once).
   */
  async lookupForSend(user: string): Promise<LookupResultMessage> {
    const key = user.toLowerCase();
    const cached = this.#sendLookups.get(key);
    if (cached && Date.now() - cached.at < SEND_LOOKUP_TTL_MS) return cached.result;
    const result = await this.lookup(user);
    this.#sendLookups.set(key, { result, at: Date.now() });
    return result;
  }

  /**
   * Whether a lookup for sending of a moment ago found `user` offline: a burst of messages to
   * someone away goes to the mailbox without asking again (a presence change drops it).
   */
  knownOffline(user: string): boolean {
    const cached = this.#sendLookups.get(user.toLowerCase());
    return cached !== undefined && Date.now() - cached.at < SEND_LOOKUP_TTL_MS &&
      !cached.result.online;
  }

  /** The directory's mail key for `user`, checked: signed by their pinned identity key. */
  async mailKeyOf(user: string): Promise<{ user: string; mailKey: string }> {
    const found = await this.lookupForSend(user);
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
    const session = this.require();
    this.checkName(user);
    const found = await this.request<LookupResultMessage>({ type: "lookup", user });
    session.store.trustKey(found.user, found.publicKey);
    this.#ctx.emit({
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
    const session = this.require();
    if (user === undefined) {
      this.#ctx.emit({
        type: "fingerprint",
        user: session.user,
        number: await ownNumber(session.user, session.identity.publicKey),
      });
      return;
    }
    this.checkName(user);
    const found = await this.request<LookupResultMessage>({ type: "lookup", user });
    const pinned = session.store.knownKey(found.user);
    this.#ctx.emit({
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
  async resolveKey(
    user: string,
    options: { contactOnly?: boolean; alsoAllow?: (user: string) => boolean } = {},
  ): Promise<{ user: string; publicKey: string }> {
    const session = this.require();
    let result: LookupResultMessage;
    try {
      result = await this.lookup(user);
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
    // Links come only from mutual contacts and fellow group members. While the server is
    // away, a key pinned before is let in: it cannot be asked.
    if (options.contactOnly && !result.contact && !options.alsoAllow?.(result.user)) {
      throw new NotAContactError(result.user, session.user);
    }
    return { user: result.user, publicKey: result.publicKey };
  }
}

function addressOf(server: ServerAddress): string {
  return server.host.includes(":")
    ? `[${server.host}]:${server.port}`
    : `${server.host}:${server.port}`;
}

/** True for an IPv4 address in dotted form or an IPv6 address (as node:net's isIP). */
export function isIpAddress(host: string): boolean {
  if (/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(host)) {
    return true;
  }
  if (!host.includes(":") || !/^[0-9A-Fa-f:.]+$/.test(host)) return false;
  try {
    return new URL(`http://[${host}]/`).hostname !== "";
  } catch {
    return false;
  }
}

/**
 * Every address `host` resolves to (the system resolver, so /etc/hosts counts), or the host
 * itself when it is an address already or does not resolve (then the connect attempt says so).
 */
async function resolveAll(host: string): Promise<string[]> {
  if (isIpAddress(host)) return [host];
  try {
    // Imported only for a name: node:dns costs a process ≈ 10-40 ms of CPU to load.
    const { lookup } = await import("node:dns/promises");
    const found = await lookup(host, { all: true });
    const addresses = [...new Set(found.map((a) => a.address))];
    return addresses.length > 0 ? addresses : [host];
  } catch {
    return [host];
  }
}

/**
 * The files a signup moves from `signup-pending/` into the user's folder once the server made
 * the account, in this order: `identity.json` last, since it says there is an account here.
 */
const KEY_FILES = ["mail-key.json", "identity.json"] as const;

/** Moves a signup's keys into the user's folder `dir` (the server made the account). */
async function moveKeys(dir: string): Promise<void> {
  const pending = join(dir, "signup-pending");
  for (const file of KEY_FILES) {
    await Deno.rename(join(pending, file), join(dir, file)).catch((error) => {
      // (Moved already, by a move that a kill -9 cut short.)
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }
  await Deno.remove(pending, { recursive: true }).catch(() => {});
}

/**
 * Finishes a {@link moveKeys} that a kill -9 cut short: one key is in the user's folder `dir`
 * and gone from `signup-pending/` (so the server made the account), the other still only there.
 * Left so, the client logged in without its mail key (or found no account), and the same signup
 * typed again made new keys over the one left behind: every message sealed to it was lost.
 * Anything else is left as it is (both keys pending: a signup the server may not have made).
 */
async function finishKeyMoves(dir: string): Promise<void> {
  const pending = join(dir, "signup-pending");
  const exists = (path: string) => Deno.stat(path).then(() => true, () => false);
  const [inDir, inPending] = await Promise.all([
    Promise.all(KEY_FILES.map((file) => exists(join(dir, file)))),
    Promise.all(KEY_FILES.map((file) => exists(join(pending, file)))),
  ]);
  // Each key in one place only, and one in each.
  const cutShort = inDir.every((moved, i) => moved !== inPending[i]) && inDir.includes(true) &&
    inDir.includes(false);
  if (cutShort) await moveKeys(dir);
}

/**
 * The keys of a signup not answered yet: those of an earlier try whose answer was lost, or new
 * ones, written (owner-only) before the request goes out.
 */
async function pendingKeys(dir: string): Promise<{ identity: Identity; mailKey: MailKey }> {
  const identity = await Identity.load(join(dir, "identity.json"));
  const mailKey = await MailKey.load(join(dir, "mail-key.json"));
  if (identity && mailKey) return { identity, mailKey };
  const made = await Identity.generate();
  const fresh = await MailKey.generate();
  await Identity.save(join(dir, "identity.json"), made.identity.publicKey, made.pkcs8);
  await fresh.save(join(dir, "mail-key.json"));
  return { identity: made.identity, mailKey: fresh };
}
