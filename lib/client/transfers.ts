/**
 * File sharing over the direct links, never through the server. Receiving is a choice: an
 * offer (name, size, sender) waits for the user to accept or decline it, unless
 * `--auto-accept` says otherwise, and expires unanswered; before accepting, the bytes held in
 * partial files are capped and the disk's free space is checked. The file is streamed in
 * chunks with backpressure (a few chunks in flight per link, so a chat line waits for at most a
 * few), checked end to end with SHA-256, written aside under a temporary name and moved into
 * downloads only once complete and verified. The sender hashes the file as it reads it for
 * sending (on a worker thread for a large one) and sends the hash after the last chunk: the
 * data starts at once, and the file is read once, not twice. An interrupted transfer leaves
 * its partial file aside; offering the same file again (same tag and size: the sender's
 * fingerprint of the file's version, see {@link fileTag}) resumes where it stopped, and a part
 * that does not belong to the file after all fails the final check and is discarded.
 *
 * A link that moves to another path under a running transfer (a punched path that died and
 * fell back to the relay, a link replaced by a fresh dial) does not end it: the sender offers
 * the same transfer again on the link that replaced the lost one, the receiver answers with
 * what it already holds, and the file goes on from there (same id, same running hash), with
 * nothing asked of either user.
 */
import { loadNodeCrypto } from "../crypto/node_crypto.ts";
import { basename, join } from "../util/paths.ts";
import { fromHex, toHex } from "../util/hex.ts";
import type { BinaryFrame } from "../net/framed_connection.ts";
import { BINARY_TAG, writeAll } from "../net/framed_connection.ts";
import { MAX_PLAINTEXT_LEN } from "../crypto/noise.ts";
import type { PeerMessage } from "../protocol/messages.ts";
import { numberedName, sanitizeFileName } from "../peer/file_names.ts";
import { pathOf, type PeerLink } from "../peer/peer_link.ts";
import { type ClientStore, groupChat } from "./client_store.ts";
import type { ClientEvent } from "./events.ts";
import { freeNow } from "../util/free.ts";
import { type FileHash, fileHash } from "./file_hash.ts";

const HEADER = 1 + 16 + 8;
/**
 * Noise transport messages per chunk. A chunk of several messages costs one frame, one file
 * write and one hash update where one per message cost four (receivers take chunks of any size
 * up to the frame limit; senders before this one sent one message per chunk).
 */
const MESSAGES_PER_CHUNK = 4;
/** Bytes of file data per chunk: with its 25-byte header it fills 4 Noise messages. */
export const CHUNK_SIZE = MESSAGES_PER_CHUNK * MAX_PLAINTEXT_LEN - HEADER;
/**
 * Chunks queued on a link at once (≈ 1 MB): enough to keep reading, encryption and the socket
 * busy together; a chat line queued behind them waits a few milliseconds.
 */
const CHUNKS_IN_FLIGHT = 4;
/** How long a partial file is kept for resuming. */
const PARTIAL_TTL_MS = 24 * 3600_000;
const ANSWER_TIMEOUT_MS = 120_000;
/** The reason a `file_reject` gives when the person receiving said no. */
const RECEIVER_DECLINED = "the receiver declined";

/**
 * How long the sender waits for an accept or a decline: a person decides, and receivers let an
 * offer wait up to an hour (`--offer-timeout`) before declining it for them.
 */
const OFFER_ANSWER_MS = 3600_000 + 60_000;
/** Offers waiting for an answer at once, from everyone together; more are declined. */
export const MAX_WAITING_OFFERS = 32;
/**
 * Files received at once from one sender, and from everyone together; more are declined. Each
 * holds an open file and its hash state for as long as its sender takes, and small files count
 * next to nothing against --max-partial: a contact offering empty files it never ends (taken at
 * once with --auto-accept contacts) would otherwise hold the client's file descriptors.
 */
export const MAX_RECEIVING_FROM_ONE = 16;
export const MAX_RECEIVING = 64;
/**
 * Parts of transfers no longer running kept at once (oldest dropped first): tiny parts count next
 * to nothing against --max-partial, and a peer breaking off transfer after transfer would
 * otherwise fill the folder with them (and each accept lists them all).
 */
export const MAX_KEPT_PARTS = 64;
const PROGRESS_EVERY_MS = 250;
/** A sender says so when it must hash more than this of a file before it goes on sending. */
const CATCH_UP_NOTICE = 64 * 1024 * 1024;
/** The sender reads the file in blocks of this size and cuts chunks from them. */
const READ_BLOCK = 1024 * 1024;
/** Longest reason the protocol carries in file_reject, file_done and file_cancel. */
const MAX_WIRE_REASON = 300;
/** A transfer whose link was lost is offered again on the next one, this often without progress. */
const MAX_STALLED_RESUMES = 3;
/** And this often in all (a link that keeps dying is not followed for ever). */
const MAX_RESUMES = 50;
/**
 * How long a receiver keeps a transfer open after its link was replaced, for the sender to
 * offer it again there (beyond that it fails, keeping the part for a manual resume).
 */
const RESUME_WAIT_MS = 30_000;
/** Transfers received lately, remembered so a repeated offer (its answer was lost) ends at once. */
const FINISHED_REMEMBERED = 64;

export interface TransferHost {
  readonly user: string;
  readonly store: ClientStore;
  emit(event: ClientEvent): void;
  link(user: string): Promise<PeerLink>;
  /**
   * The link that replaces a lost one to `user`: one already up, or the one a fallback or
   * dial under way brings; undefined when none is coming (the user is gone).
   */
  replacement(user: string): Promise<PeerLink | undefined>;
  /** Where verified files land. */
  readonly downloadsDir: string;
  /** Where partial files wait (never in downloads). */
  readonly partialDir: string;
  /** Largest file accepted. */
  readonly maxFileSize: number;
  /** Which offers are taken without asking. */
  readonly autoAccept: AutoAccept;
  /**
   * Whether `user` is in my contact list (for `autoAccept: "contacts"`); undefined when that
   * cannot be told now (the server away, and no list yet).
   */
  isContact(user: string): Promise<boolean | undefined>;
  /** Whether `user` is a member of group `group` as I know it now. */
  isGroupMember(group: string, user: string): boolean;
  /** Most bytes held in partial files, those of transfers in progress counted whole. */
  readonly maxPartialBytes: number;
  /** Free disk space an accepted file must leave. */
  readonly keepFreeBytes: number;
  /** An offer nobody answers is declined after this long. */
  readonly offerTimeoutMs: number;
}

/**
 * `ask`: every new offer waits for the user; `contacts`: offers from my contacts are accepted
 * at once, others wait; `none`: every new offer is declined. A resume is never asked again.
 */
export type AutoAccept = "ask" | "contacts" | "none";

/** An offer waiting for the user's answer; `n` is the number the user types. */
interface WaitingOffer {
  n: number;
  link: PeerLink;
  offer: Extract<PeerMessage, { type: "file_offer" }>;
  name: string;
  partial: string;
  timer: ReturnType<typeof setTimeout>;
}

/** The file a transfer sends, as `share` found it. */
interface SharedFile {
  path: string;
  name: string;
  size: number;
  /** Its modification time then (ms): a file edited since is not the one offered. */
  mtime: number;
  tag: string;
  group?: string;
}

/**
 * Fails when the file open in `handle` is no longer the version `share` found: cut, grown or
 * edited since (its size or modification time moved). Its bytes would reach the receiver as a
 * mix of versions, read at different times, that the SHA-256 (taken over what was read) passes.
 */
async function checkUnchanged(handle: Deno.FsFile, file: SharedFile): Promise<void> {
  const now = await handle.stat();
  if (now.size !== file.size || (now.mtime?.getTime() ?? 0) !== file.mtime) {
    throw new TransferError(
      "FILE_CHANGED",
      `${file.name} changed while it was being sent; share it again to send it as it is now`,
    );
  }
}

/**
 * The sender's SHA-256 over the file, fed in order as the file is read for sending. An attempt
 * that starts below what is hashed (the link moved) feeds nothing until it passes it; one that
 * starts above it (the receiver kept a part) hashes the bytes in between first.
 */
class SendHash {
  /** Made at the first byte: an offer may wait an hour for its answer, a worker with it. */
  #hash: FileHash | undefined;
  /** Bytes hashed: the file's first `upTo` bytes. */
  upTo = 0;
  #digest: Promise<string> | undefined;

  constructor(readonly size: number) {}

  /** Adds the `bytes` read at `at` that are not hashed yet; `at` is at most `upTo`. */
  feed(at: number, bytes: Uint8Array): Promise<void> {
    const end = at + bytes.length;
    if (end <= this.upTo) return Promise.resolve();
    const fresh = bytes.subarray(this.upTo - at);
    this.upTo = end;
    return this.#started().update(fresh);
  }

  #started(): FileHash {
    return this.#hash ??= fileHash(this.size);
  }

  /** Hashes the file's bytes from `upTo` to `offset`, read from `file` (which is left there). */
  async catchUp(file: Deno.FsFile, offset: number): Promise<void> {
    if (offset <= this.upTo) return;
    await file.seek(this.upTo, Deno.SeekMode.Start);
    await readBlocks(file, offset - this.upTo, (block) => this.feed(this.upTo, block));
    if (this.upTo < offset) {
      throw new TransferError("BAD_FILE", "the file got shorter while sending");
    }
  }

  /** The hash of the whole file, once every byte of it was fed. */
  digest(): Promise<string> {
    if (this.upTo !== this.size) throw new Error(`hashed ${this.upTo} of ${this.size} bytes`);
    return this.#digest ??= this.#started().digest();
  }

  close(): void {
    this.#hash?.close();
  }
}

interface Outgoing {
  fid: string;
  peer: string;
  /** The link the current attempt runs on (answers on any other are stale). */
  link?: PeerLink;
  answer: PromiseWithResolvers<
    { accepted: true; offset: number } | { accepted: false; reason: string }
  >;
  done: PromiseWithResolvers<{ ok: boolean; reason?: string }>;
  cancelled?: string;
  /** The receiver ended the current attempt itself (file_cancel or file_done). */
  endedByPeer?: boolean;
}

/** How far one transfer got, across the links it ran on. */
interface SendRun {
  /** File bytes written to links (also those lost with a link). */
  sent: number;
  /** Where the receiver asked the latest attempt to start (-1 before the first answer). */
  offset: number;
  /** Where it asked the first attempt to start (an earlier, interrupted transfer's part). */
  firstOffset?: number;
  /** The SHA-256 of the file so far, across attempts. */
  hash: SendHash;
}

interface Incoming {
  fid: string;
  from: string;
  link: PeerLink;
  name: string;
  size: number;
  tag: string;
  group?: string;
  partial: string;
  file: Deno.FsFile;
  /** Over every byte written so far (off the main thread for a large file). */
  hash: FileHash;
  at: number;
  startedAt: number;
  startOffset: number;
  lastProgress: number;
  /** The chunk being written (a resume waits for it before it says where to go on from). */
  writing: Promise<void>;
  /** Set while the link was lost and the sender is expected to offer the transfer again. */
  waitTimer?: ReturnType<typeof setTimeout>;
}

export class TransferError extends Error {
  override name = "TransferError";
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** Fills `into` from where `file` stands; returns the bytes read (fewer only at its end). */
async function readFully(file: Deno.FsFile, into: Uint8Array): Promise<number> {
  let filled = 0;
  while (filled < into.length) {
    const n = await file.read(into.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return filled;
}

/**
 * Reads `file` from where it stands, `limit` bytes or up to its end, and hands each block to
 * `take`, in order; the next block is read while `take` works on this one (a block is reused
 * once its `take` has settled). Returns the bytes read.
 */
async function readBlocks(
  file: Deno.FsFile,
  limit: number,
  take: (block: Uint8Array) => Promise<void>,
): Promise<number> {
  const buffers = [new Uint8Array(READ_BLOCK), new Uint8Array(READ_BLOCK)];
  let taking = Promise.resolve();
  let total = 0;
  for (let k = 0; total < limit; k++) {
    const buffer = buffers[k % 2]!;
    const n = await file.read(buffer.subarray(0, Math.min(READ_BLOCK, limit - total)));
    await taking;
    if (n === null) break;
    taking = take(buffer.subarray(0, n));
    total += n;
  }
  await taking;
  return total;
}

/** Bytes of each end of a file that go into its tag. */
const TAG_EDGE = 64 * 1024;
/** The setting that keeps the key of a user's file tags (hex), made at the first login. */
export const TAG_KEY_SETTING = "file_tag_key";

/**
 * Names a version of a file without reading all of it: HMAC-SHA256 under the sender's own
 * `key` over its size, modification time and first and last {@link TAG_EDGE} bytes. The same
 * file shared again has the same tag, so a receiver finds the part an interrupted transfer left;
 * an edited file almost always has another. When it does not (an edit inside that kept the size
 * and the time), the part fails the final SHA-256 check and is discarded: a tag only ever costs
 * a retry, never a wrong file. The key keeps the time to the sender: with a plain hash, a
 * receiver holding the file could search for it.
 */
export async function fileTag(
  path: string,
  size: number,
  mtime: number,
  key: Uint8Array,
): Promise<string> {
  const hash = (await loadNodeCrypto()).createHmac("sha256", key);
  const head = new DataView(new ArrayBuffer(16));
  head.setFloat64(0, size);
  head.setFloat64(8, mtime);
  hash.update(new TextEncoder().encode("confab file tag 1"));
  hash.update(new Uint8Array(head.buffer));
  using file = await Deno.open(path, { read: true });
  const edge = new Uint8Array(Math.min(TAG_EDGE, size));
  for (const from of [0, Math.max(0, size - edge.length)]) {
    await file.seek(from, Deno.SeekMode.Start);
    hash.update(edge.subarray(0, await readFully(file, edge)));
  }
  return hash.digest("hex");
}

/**
 * Reads a file in large blocks (one read per block, not per chunk) and hands out chunks; the
 * next block is read (off the main thread) while this one is handed out.
 */
class BlockReader {
  readonly #file: Deno.FsFile;
  readonly #blocks: [Uint8Array, Uint8Array];
  /** The block being handed out, and the bytes in it. */
  #block: Uint8Array;
  #start = 0;
  #end = 0;
  /** The read of the other block, under way; null once the file has ended. */
  #next: Promise<number> | null;

  constructor(file: Deno.FsFile, blockSize: number) {
    this.#file = file;
    this.#blocks = [new Uint8Array(blockSize), new Uint8Array(blockSize)];
    this.#block = this.#blocks[1];
    this.#next = this.#fill(this.#blocks[0]);
  }

  /**
   * Starts filling `block` as far as the file goes; resolves with the bytes read (fewer only at
   * the end). A failure is seen by whoever awaits it, or nobody (the transfer ended first).
   */
  #fill(block: Uint8Array): Promise<number> {
    const filling = readFully(this.#file, block);
    filling.catch(() => {});
    return filling;
  }

  /** Fills `into` from the file; returns the bytes filled (fewer only at the end). */
  async read(into: Uint8Array): Promise<number> {
    let filled = 0;
    while (filled < into.length) {
      if (this.#start === this.#end) {
        if (this.#next === null) break;
        const n = await this.#next;
        const block = this.#block === this.#blocks[0] ? this.#blocks[1] : this.#blocks[0];
        this.#next = n < block.length ? null : this.#fill(this.#block);
        this.#block = block;
        this.#start = 0;
        this.#end = n;
        continue;
      }
      const n = Math.min(into.length - filled, this.#end - this.#start);
      into.set(this.#block.subarray(this.#start, this.#start + n), filled);
      this.#start += n;
      filled += n;
    }
    return filled;
  }

  /** Waits for a read still under way (before the file is closed). */
  async settle(): Promise<void> {
    await this.#next?.catch(() => {});
  }
}

export class Transfers {
  readonly #host: TransferHost;
  readonly #outgoing = new Map<string, Outgoing>();
  readonly #incoming = new Map<string, Incoming>();
  readonly #waiting = new Map<number, WaitingOffer>();
  /**
   * Links with waiting offers or incoming transfers, each watched for its end once (not once per
   * offer or transfer: a peer offering and cancelling in a loop would pile up a watcher per
   * offer, each holding it, for the link's life).
   */
  readonly #watched = new WeakSet<PeerLink>();
  #nextOffer = 1;
  #warnedNoStatfs = false;
  /** Set by close(): the store is about to close, so nothing more goes into history. */
  #closed = false;
  /** Accepts run one at a time, so two cannot both take the last room. */
  #accepting: Promise<void> = Promise.resolve();
  /** Transfers received lately, by id (oldest first). */
  readonly #finished = new Map<string, { user: string; tag: string; size: number }>();

  constructor(host: TransferHost) {
    this.#host = host;
  }

  /** Makes the folders and drops partial files too old to resume. */
  async prepare(now = Date.now()): Promise<void> {
    this.#tagKey();
    await Deno.mkdir(this.#host.downloadsDir, { recursive: true, mode: 0o700 });
    await Deno.mkdir(this.#host.partialDir, { recursive: true, mode: 0o700 });
    for await (const entry of Deno.readDir(this.#host.partialDir)) {
      const path = join(this.#host.partialDir, entry.name);
      const info = await Deno.stat(path).catch(() => undefined);
      if (info?.mtime && now - info.mtime.getTime() > PARTIAL_TTL_MS) {
        await Deno.remove(path).catch(() => {});
      }
    }
  }

  /** The key of this user's file tags: kept in the store, so a tag outlives a restart. */
  #tagKey(): Uint8Array {
    const store = this.#host.store;
    let key = store.getSetting(TAG_KEY_SETTING);
    if (key === undefined || !/^[0-9a-f]{64}$/.test(key)) {
      key = toHex(crypto.getRandomValues(new Uint8Array(32)));
      store.setSetting(TAG_KEY_SETTING, key);
    }
    return fromHex(key);
  }

  /**
   * Shares a file with each of `peers`, in parallel and independently: one slow or dead peer
   * never holds up the others.
   * @throws {TransferError} when the file cannot be read.
   */
  async share(path: string, peers: string[], group?: string): Promise<void> {
    // The file's hashes and the bulk cipher of its chunks are node:crypto's (node_crypto.ts).
    await loadNodeCrypto();
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
      if (!info.isFile) throw new TransferError("BAD_FILE", `${path} is not a file`);
      (await Deno.open(path, { read: true })).close();
    } catch (error) {
      if (error instanceof TransferError) throw error;
      const why = error instanceof Deno.errors.NotFound
        ? "no such file"
        : error instanceof Deno.errors.PermissionDenied
        ? "permission denied"
        : (error as Error).message;
      throw new TransferError("BAD_FILE", `cannot read ${path}: ${why}`);
    }
    const name = basename(path);
    const mtime = info.mtime?.getTime() ?? 0;
    const tag = await fileTag(path, info.size, mtime, this.#tagKey());
    const file = { path, name, size: info.size, mtime, tag, group };
    const results = await Promise.all(peers.map((peer) => this.#sendTo(peer, file)));
    // One line in history for the share, once it reached anyone.
    const sha256 = results.find((digest) => digest !== undefined);
    if (sha256 !== undefined) {
      this.#record(group ?? peers[0]!, this.#host.user, name, info.size, sha256, group);
    }
  }

  /** Sends `file` to `peer`; the file's SHA-256 once the peer has it, else undefined. */
  async #sendTo(peer: string, file: SharedFile): Promise<string | undefined> {
    const host = this.#host;
    const fid = toHex(crypto.getRandomValues(new Uint8Array(16)));
    const base = { fid, direction: "out" as const, peer, name: file.name, size: file.size };
    const t: Outgoing = {
      fid,
      peer,
      answer: Promise.withResolvers(),
      done: Promise.withResolvers(),
    };
    this.#outgoing.set(fid, t);
    const run: SendRun = { sent: 0, offset: -1, hash: new SendHash(file.size) };
    let stalled = 0;
    try {
      for (let attempt = 0;; attempt++) {
        const link = await host.link(peer);
        const before = run.offset;
        try {
          const sha256 = await this.#sendOver(link, t, file, base, run);
          host.emit({
            type: "transfer_done",
            ...base,
            bytes: file.size - run.firstOffset!,
            resumedFrom: run.firstOffset!,
            sha256,
          });
          return sha256;
        } catch (error) {
          // The link was lost under the transfer (its path died, or it was replaced): the
          // same transfer is offered again on whichever link replaces it.
          if (!link.fc.isClosed || t.cancelled) throw error;
          // Once it has closed, the links room has decided what replaces it (a fallback to
          // the relay, a dial under way): the next link is that one, not a dial of our own.
          await link.fc.closed;
          stalled = run.offset > before ? 0 : stalled + 1;
          if (stalled > MAX_STALLED_RESUMES || attempt >= MAX_RESUMES) throw error;
        }
      }
    } catch (error) {
      const reason = error instanceof TransferError ? error.message : (error as Error).message;
      host.emit({ type: "transfer_failed", ...base, reason, bytes: run.sent, kept: false });
      return undefined;
    } finally {
      this.#outgoing.delete(fid);
      run.hash.close();
    }
  }

  /**
   * One attempt of a transfer over `link`: offers it (again, after a lost link: the receiver
   * answers where to go on from), sends the rest and the file's hash, and waits for the
   * receiver's check. Returns the hash.
   */
  async #sendOver(
    link: PeerLink,
    t: Outgoing,
    file: SharedFile,
    base: { fid: string; direction: "out"; peer: string; name: string; size: number },
    run: SendRun,
  ): Promise<string> {
    const host = this.#host;
    const { fid, peer } = t;
    t.link = link;
    t.answer = Promise.withResolvers();
    t.done = Promise.withResolvers();
    t.endedByPeer = false;
    const closed = link.fc.closed.then(() => {
      throw new TransferError("PEER_GONE", `${peer} disconnected`);
    });
    closed.catch(() => {});
    await link.fc.send({
      type: "file_offer",
      fid,
      name: file.name,
      size: file.size,
      tag: file.tag,
      ...(file.group ? { group: file.group } : {}),
    });
    if (run.firstOffset === undefined) host.emit({ type: "transfer_offered", ...base });
    const answer = await Promise.race([
      closed,
      withTimeout(t.answer.promise, "no answer", OFFER_ANSWER_MS),
    ]);
    if (!answer.accepted) {
      // Their client may have said no without them (an offer left unanswered, no room).
      throw new TransferError(
        "REJECTED",
        answer.reason === RECEIVER_DECLINED
          ? `${peer} declined`
          : `${peer} did not take it: ${answer.reason}`,
      );
    }
    try {
      return await this.#sendAccepted(link, t, file, base, run, answer.offset, closed);
    } catch (error) {
      // The receiver accepted and waits for the data: unless it ended the transfer itself or
      // the link is gone, it is told that none comes (it would hold the part open for ever).
      // Queued behind the chunks, not awaited: a receiver that stopped reading holds no failure.
      if (!t.endedByPeer && !link.fc.isClosed) {
        void link.fc.send({
          type: "file_cancel",
          fid,
          reason: (error as Error).message.slice(0, MAX_WIRE_REASON),
        }).catch(() => {});
      }
      throw error;
    }
  }

  /** The rest of an attempt the receiver accepted, from `offset`: data, hash, its check. */
  async #sendAccepted(
    link: PeerLink,
    t: Outgoing,
    file: SharedFile,
    base: { fid: string; direction: "out"; peer: string; name: string; size: number },
    run: SendRun,
    offset: number,
    closed: Promise<never>,
  ): Promise<string> {
    const host = this.#host;
    const { fid, peer } = t;
    if (offset > file.size) {
      throw new TransferError("BAD_OFFSET", `${peer} asked for a bad offset`);
    }
    if (run.firstOffset === undefined) {
      run.firstOffset = offset;
      host.emit({ type: "transfer_started", ...base, offset });
    } else {
      host.emit({
        type: "info",
        text: `${file.name} to ${peer} goes on from byte ${offset} over the ${
          pathOf(link)
        } path (the link moved)`,
      });
    }
    run.offset = offset;
    const progress = new Progress(host, base, run.firstOffset, link);
    using handle = await Deno.open(file.path, { read: true });
    // Opened again for each attempt: the path may lead to another file by now.
    await checkUnchanged(handle, file);
    // The part the receiver kept from an earlier transfer is hashed here, the rest as it goes.
    if (offset - run.hash.upTo > CATCH_UP_NOTICE) {
      host.emit({
        type: "info",
        text: `checking the ${((offset - run.hash.upTo) / 1024 / 1024).toFixed(1)} MiB of ` +
          `${file.name} ${peer} already has (SHA-256) before sending the rest`,
      });
    }
    await run.hash.catchUp(handle, offset);
    await handle.seek(offset, Deno.SeekMode.Start);
    const fidBytes = fromHex(fid);
    let at = offset;
    const corrupt = Deno.env.get("CONFAB_FAULT") === "corrupt-file";
    // A few chunks in flight: the next is read and sealed while earlier ones are written. A
    // chunk is sealed as it is queued, so one plaintext buffer serves them all; each frame
    // buffer is reused only once the frame in it is on the wire. A slow receiver fills the
    // socket, the writes wait, and so does this loop (TCP pushes back).
    const chunk = new Uint8Array(HEADER + CHUNK_SIZE);
    chunk[0] = BINARY_TAG;
    chunk.set(fidBytes, 1);
    const chunkView = new DataView(chunk.buffer);
    const frames = Array.from(
      { length: CHUNKS_IN_FLIGHT },
      () => new Uint8Array(link.fc.frameSize(chunk.length)),
    );
    const inFlight: Promise<void>[] = [];
    const source = new BlockReader(handle, READ_BLOCK);
    try {
      for (let k = 0; at < file.size; k++) {
        if (t.cancelled) throw new TransferError("CANCELLED", t.cancelled);
        if (inFlight.length === CHUNKS_IN_FLIGHT) await inFlight.shift();
        const want = Math.min(CHUNK_SIZE, file.size - at);
        const body = chunk.subarray(0, HEADER + want);
        const n = await source.read(body.subarray(HEADER));
        if (n < want) {
          throw new TransferError("BAD_FILE", `${file.name} got shorter while sending`);
        }
        chunkView.setBigUint64(17, BigInt(at), false);
        // Hashed before it is sealed (the plaintext buffer is read again for the next chunk).
        await run.hash.feed(at, body.subarray(HEADER));
        if (corrupt && at === offset && run.sent === 0) body[HEADER] = body[HEADER]! ^ 0xff; // tests only
        const sending = Promise.race([
          link.fc.sendBinary(body, frames[k % CHUNKS_IN_FLIGHT]),
          closed,
        ]);
        sending.catch(() => {}); // awaited below
        inFlight.push(sending);
        at += n;
        run.sent += n;
        progress.update(at);
      }
    } finally {
      // Nothing of the file may be read into a buffer still being sent, and the file is closed
      // only once no read of it is under way.
      await Promise.allSettled(inFlight);
      await source.settle();
    }
    for (const sending of inFlight) await sending;
    await checkUnchanged(handle, file);
    const sha256 = await run.hash.digest();
    await link.fc.send({ type: "file_end", fid, sha256 });
    const done = await Promise.race([closed, withTimeout(t.done.promise, "no confirmation")]);
    if (!done.ok) throw new TransferError("CHECK_FAILED", `${peer}: ${done.reason ?? "failed"}`);
    return sha256;
  }

  /** Routes a file message or binary chunk; returns false for anything else. */
  async onPeerMessage(link: PeerLink, m: PeerMessage | BinaryFrame): Promise<boolean> {
    switch (m.type) {
      case "binary":
        try {
          await this.#onChunk(link, m.data);
        } finally {
          // Written and hashed (or dropped): its memory is reused or freed now, not at the
          // next GC.
          if (m.release) m.release();
          else freeNow(m.data);
        }
        return true;
      case "file_offer":
        await this.#onOffer(link, m);
        return true;
      case "file_accept":
      case "file_reject": {
        const t = this.#outgoing.get(m.fid);
        if (t && t.link === link) {
          t.answer.resolve(
            m.type === "file_accept"
              ? { accepted: true, offset: m.offset }
              : { accepted: false, reason: m.reason },
          );
        }
        return true;
      }
      case "file_done": {
        const t = this.#outgoing.get(m.fid);
        if (t && t.link === link) {
          t.endedByPeer = true;
          t.done.resolve({ ok: m.ok, reason: m.reason });
        }
        return true;
      }
      case "file_end":
        await this.#onEnd(link, m.fid, m.sha256);
        return true;
      case "file_cancel": {
        const out = this.#outgoing.get(m.fid);
        if (out && out.link === link) {
          out.endedByPeer = true;
          out.cancelled = `${link.user} cancelled: ${m.reason}`;
          out.answer.resolve({ accepted: false, reason: m.reason });
          out.done.resolve({ ok: false, reason: m.reason });
        }
        const inc = this.#incoming.get(m.fid);
        if (inc && inc.link === link) {
          await this.#fail(inc, `${link.user} stopped sending it: ${m.reason}`, true);
        }
        const waiting = [...this.#waiting.values()].find((w) =>
          w.offer.fid === m.fid && w.link === link
        );
        if (waiting) this.#drop(waiting, `${link.user} cancelled: ${m.reason}`);
        return true;
      }
      default:
        return false;
    }
  }

  async #onOffer(link: PeerLink, m: Extract<PeerMessage, { type: "file_offer" }>): Promise<void> {
    const host = this.#host;
    if (m.group !== undefined && !host.isGroupMember(m.group, link.user)) {
      // Only a group's members write in it (as with its messages): a file from anyone else
      // is theirs alone, shown and kept in the chat with them.
      const { group: _, ...direct } = m;
      m = direct;
    }
    const running = this.#incoming.get(m.fid);
    if (running) {
      // Offered again on another link: the old one was lost under it (see the module's note).
      if (
        running.link !== link && running.from.toLowerCase() === link.user.toLowerCase() &&
        running.tag === m.tag && running.size === m.size
      ) await this.#resume(running, link);
      return;
    }
    const finished = this.#finished.get(m.fid);
    if (finished) {
      // Received already; the confirmation was lost with the link: nothing more to send.
      if (
        finished.user === link.user.toLowerCase() && finished.tag === m.tag &&
        finished.size === m.size
      ) await link.fc.send({ type: "file_accept", fid: m.fid, offset: m.size }).catch(() => {});
      return;
    }
    if (this.#waitingFor(m.fid)) return;
    if (m.size > host.maxFileSize) {
      host.emit({
        type: "error",
        code: "FILE_TOO_LARGE",
        message: `${link.user} offered ${sanitizeFileName(m.name)} (${m.size} bytes); ` +
          `refused: above your limit of ${host.maxFileSize} bytes (--max-file-size)`,
      });
      await reject(
        link,
        m.fid,
        `the file is larger than the receiver's limit of ${host.maxFileSize} bytes`,
      );
      return;
    }
    const name = sanitizeFileName(m.name);
    const partial = join(
      host.partialDir,
      `${m.tag}-${m.size}-${link.user.toLowerCase()}.part`,
    );
    // The same file offered anew (another file id) while a transfer of it waits for its lost
    // link's replacement: the sender's client restarted and will not offer that one again, so
    // it ends here, its part kept for this offer to resume.
    const stale = [...this.#incoming.values()].find((t) =>
      t.partial === partial && t.link !== link && t.link.fc.isClosed
    );
    if (stale) {
      await stale.writing;
      await this.#fail(stale, `${link.user} shared it again`, true);
    }
    if (
      [...this.#incoming.values()].some((t) => t.partial === partial) ||
      [...this.#waiting.values()].some((w) => w.partial === partial)
    ) {
      await reject(link, m.fid, "this file is already being received");
      return;
    }
    // A file this user accepted before and partly received: resuming it is not asked again.
    const resuming = ((await Deno.stat(partial).catch(() => undefined))?.size ?? 0) > 0;
    const policy = host.autoAccept;
    if (
      resuming ||
      (policy === "contacts" && await host.isContact(link.user).catch(() => false))
    ) {
      await this.#accept(link, m, name, partial);
      return;
    }
    const base = { fid: m.fid, direction: "in" as const, peer: link.user, name, size: m.size };
    if (policy === "none") {
      host.emit({
        type: "transfer_declined",
        ...base,
        reason: "you take no files (--auto-accept none)",
      });
      await reject(link, m.fid, "the receiver takes no files");
      return;
    }
    if (this.#waiting.size >= MAX_WAITING_OFFERS) {
      host.emit({
        type: "transfer_declined",
        ...base,
        reason: `${MAX_WAITING_OFFERS} offers already wait for an answer`,
      });
      await reject(link, m.fid, "too many offers wait for the receiver's answer; try later");
      return;
    }
    const n = this.#nextOffer++;
    const waiting: WaitingOffer = {
      n,
      link,
      offer: m,
      name,
      partial,
      timer: setTimeout(() => {
        if (this.#drop(waiting, "nobody answered in time")) {
          void reject(link, m.fid, "the offer expired: nobody answered it in time");
        }
      }, host.offerTimeoutMs),
    };
    this.#waiting.set(n, waiting);
    this.#watchEnd(link);
    host.emit({
      type: "transfer_offered",
      ...base,
      offer: n,
      expiresAt: Date.now() + host.offerTimeoutMs,
      ...(m.group ? { group: m.group } : {}),
    });
  }

  /**
   * With `--auto-accept contacts`, accepts the waiting offers whose sender is a contact. Called
   * once the server has given the contact list again: an offer that came while the server
   * could not be asked (away, and no list yet in this session, as after a restart) waited for a
   * person instead, and a script that takes files from its contacts would never answer it.
   *
   * @param isContact the list just given (one answer for every waiting offer, no questions).
   */
  async acceptFromContacts(isContact: (user: string) => boolean): Promise<void> {
    const host = this.#host;
    if (host.autoAccept !== "contacts") return;
    for (const waiting of [...this.#waiting.values()]) {
      if (waiting.link.fc.isClosed) continue;
      if (!isContact(waiting.link.user)) continue;
      if (!this.#drop(waiting)) continue; // answered meanwhile
      host.emit({
        type: "info",
        text: `taking ${waiting.name} from ${waiting.link.user} (offer ${waiting.n}): the ` +
          `server confirms a contact (--auto-accept contacts)`,
      });
      await this.#accept(waiting.link, waiting.offer, waiting.name, waiting.partial)
        .catch(() => {}); // a failure is the transfer's, reported as such
    }
  }

  /** The waiting offers, oldest first. */
  waitingOffers(): { offer: number; peer: string; name: string; size: number }[] {
    return [...this.#waiting.values()].map((w) => ({
      offer: w.n,
      peer: w.link.user,
      name: w.name,
      size: w.offer.size,
    }));
  }

  /**
   * The user's answer to waiting offer `n` (the only one waiting, when `n` is left out).
   * @throws {TransferError} NO_OFFER when there is no such offer, or several and no `n`.
   */
  async answer(n: number | undefined, accept: boolean): Promise<void> {
    const verb = accept ? "accept" : "decline";
    if (n === undefined) {
      if (this.#waiting.size > 1) {
        const numbers = [...this.#waiting.keys()].join(", ");
        throw new TransferError(
          "NO_OFFER",
          `${this.#waiting.size} offers wait (${numbers}): say which, e.g. ${verb} ${
            [...this.#waiting.keys()][0]
          }`,
        );
      }
      n = [...this.#waiting.keys()][0];
    }
    const waiting = n === undefined ? undefined : this.#waiting.get(n);
    if (!waiting) {
      throw new TransferError(
        "NO_OFFER",
        n === undefined
          ? "no file offer waits for an answer"
          : `no file offer ${n} waits for an answer`,
      );
    }
    if (!accept) {
      this.#drop(waiting, "you declined");
      await reject(waiting.link, waiting.offer.fid, RECEIVER_DECLINED);
      return;
    }
    this.#drop(waiting);
    if (waiting.link.fc.isClosed) {
      throw new TransferError(
        "PEER_GONE",
        `${waiting.link.user} disconnected; ask them to share it again`,
      );
    }
    await this.#accept(waiting.link, waiting.offer, waiting.name, waiting.partial);
  }

  /**
   * When `link` ends, its waiting offers are declined (`U disconnected`) and its incoming
   * transfers wait for another link or fail ({@link #linkLost}).
   */
  #watchEnd(link: PeerLink): void {
    if (this.#watched.has(link)) return;
    this.#watched.add(link);
    void link.fc.closed.then(() => {
      for (const waiting of [...this.#waiting.values()]) {
        if (waiting.link === link) this.#drop(waiting, `${link.user} disconnected`);
      }
      for (const t of [...this.#incoming.values()]) {
        if (t.link === link) void this.#linkLost(t, link);
      }
    });
  }

  /**
   * Takes an offer off the waiting list; with a `reason`, tells the user it was declined.
   * Returns false when it was no longer waiting.
   */
  #drop(waiting: WaitingOffer, reason?: string): boolean {
    if (this.#waiting.get(waiting.n) !== waiting) return false;
    this.#waiting.delete(waiting.n);
    clearTimeout(waiting.timer);
    if (reason !== undefined) {
      this.#host.emit({
        type: "transfer_declined",
        fid: waiting.offer.fid,
        direction: "in",
        peer: waiting.link.user,
        name: waiting.name,
        size: waiting.offer.size,
        offer: waiting.n,
        reason,
      });
    }
    return true;
  }

  #waitingFor(fid: string): WaitingOffer | undefined {
    return [...this.#waiting.values()].find((w) => w.offer.fid === fid);
  }

  /**
   * Why a file of `size` bytes (of which `have` are already in its partial file) cannot be
   * taken now, or undefined when it can. Partial files of transfers no longer running are
   * dropped, oldest first, to stay under the cap and below {@link MAX_KEPT_PARTS}; the disk
   * must keep `keepFreeBytes` free once every transfer in progress has written its last byte.
   */
  async #noRoom(partial: string, size: number, have: number): Promise<string | undefined> {
    const host = this.#host;
    const active = new Set([...this.#incoming.values()].map((t) => t.partial));
    let held = 0;
    let toCome = size - have;
    for (const t of this.#incoming.values()) {
      held += t.size;
      toCome += t.size - t.at;
    }
    const idle: { path: string; size: number; mtime: number }[] = [];
    for await (const entry of Deno.readDir(host.partialDir)) {
      const path = join(host.partialDir, entry.name);
      if (path === partial || active.has(path)) continue;
      const info = await Deno.stat(path).catch(() => undefined);
      if (!info?.isFile) continue;
      idle.push({ path, size: info.size, mtime: info.mtime?.getTime() ?? 0 });
      held += info.size;
    }
    idle.sort((a, b) => a.mtime - b.mtime);
    // Room for this file's bytes, and for its part among those kept should it break off.
    while (
      idle.length > 0 && (held + size > host.maxPartialBytes || idle.length >= MAX_KEPT_PARTS)
    ) {
      const oldest = idle.shift()!;
      await Deno.remove(oldest.path).catch(() => {});
      held -= oldest.size;
    }
    if (held + size > host.maxPartialBytes) {
      return `files being received would hold more than ${host.maxPartialBytes} bytes aside ` +
        `(--max-partial); accept it once the others are done`;
    }
    let free: number;
    // Loaded here, not at start-up: node:fs/promises costs every client start ~20 ms of CPU.
    const { statfs } = await import("node:fs/promises");
    try {
      const fs = await statfs(host.partialDir);
      free = fs.bavail * fs.bsize;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotCapable)) throw error;
      // Run without the permission: the cap on partial files still holds; say so once.
      if (!this.#warnedNoStatfs) {
        this.#warnedNoStatfs = true;
        host.emit({
          type: "info",
          text: "the free disk space cannot be checked before accepting files: run the client " +
            "with --allow-sys=statfs (deno task client does)",
        });
      }
      return undefined;
    }
    if (free - toCome < host.keepFreeBytes) {
      return `not enough free disk space: ${free} bytes free, it needs ${toCome} more and ` +
        `${host.keepFreeBytes} must stay free (--keep-free)`;
    }
    return undefined;
  }

  /** Why one more file from `user` cannot be received now, or undefined when it can. */
  #tooMany(user: string): string | undefined {
    const from =
      [...this.#incoming.values()].filter((t) => t.from.toLowerCase() === user.toLowerCase())
        .length;
    if (from >= MAX_RECEIVING_FROM_ONE) {
      return `${MAX_RECEIVING_FROM_ONE} files from ${user} are being received already; ` +
        `accept it once they are done`;
    }
    if (this.#incoming.size >= MAX_RECEIVING) {
      return `${MAX_RECEIVING} files are being received already; accept it once they are done`;
    }
    return undefined;
  }

  /** Opens (or reopens, to resume) the partial file and accepts the offer, if there is room. */
  #accept(
    link: PeerLink,
    m: Extract<PeerMessage, { type: "file_offer" }>,
    name: string,
    partial: string,
  ): Promise<void> {
    const run = this.#accepting.then(() => this.#acceptNow(link, m, name, partial));
    this.#accepting = run.catch(() => {});
    return run;
  }

  async #acceptNow(
    link: PeerLink,
    m: Extract<PeerMessage, { type: "file_offer" }>,
    name: string,
    partial: string,
  ): Promise<void> {
    const host = this.#host;
    let hash: FileHash | undefined;
    let offset = 0;
    let file: Deno.FsFile | undefined;
    try {
      await loadNodeCrypto(); // the file's hash and the bulk cipher of its chunks
      await Deno.mkdir(host.partialDir, { recursive: true, mode: 0o700 });
      const had = (await Deno.stat(partial).catch(() => undefined))?.size ?? 0;
      const noRoom = this.#tooMany(link.user) ??
        await this.#noRoom(partial, m.size, had <= m.size ? had : 0);
      if (noRoom !== undefined) {
        host.emit({
          type: "transfer_declined",
          fid: m.fid,
          direction: "in",
          peer: link.user,
          name,
          size: m.size,
          reason: noRoom,
        });
        await reject(link, m.fid, `the receiver has no room for it now: ${noRoom}`);
        return;
      }
      if (
        this.#incoming.has(m.fid) || [...this.#incoming.values()].some((t) => t.partial === partial)
      ) {
        await reject(link, m.fid, "this file is already being received");
        return;
      }
      file = await Deno.open(partial, { read: true, write: true, create: true, mode: 0o600 });
      const running = hash = fileHash(m.size);
      const size = (await file.stat()).size;
      if (size > 0 && size <= m.size) {
        // Resume: what we have must hash into the final check, so read it once.
        offset = await readBlocks(file, size, (block) => running.update(block));
      } else if (size > m.size) {
        await file.truncate(0);
      }
      await file.seek(offset, Deno.SeekMode.Start);
    } catch (error) {
      file?.close();
      hash?.close();
      await reject(link, m.fid, `the receiver cannot store it (${(error as Error).message})`);
      return;
    }
    if (this.#closed) {
      // Closed while the part was opened: nothing would end this transfer (or its hash worker).
      file.close();
      hash.close();
      return;
    }
    const now = Date.now();
    const t: Incoming = {
      fid: m.fid,
      from: link.user,
      link,
      name,
      size: m.size,
      tag: m.tag,
      group: m.group,
      partial,
      file,
      hash,
      at: offset,
      startedAt: now,
      startOffset: offset,
      lastProgress: now,
      writing: Promise.resolve(),
    };
    this.#incoming.set(m.fid, t);
    this.#watchEnd(link);
    await link.fc.send({ type: "file_accept", fid: m.fid, offset });
    host.emit({
      type: "transfer_started",
      fid: m.fid,
      direction: "in",
      peer: link.user,
      name,
      size: m.size,
      offset,
    });
  }

  /**
   * `link` was lost under `t`: if another link to the sender replaces it, the sender offers
   * the transfer again there (it waits a while for that); if none does, it fails now, keeping
   * the part aside.
   */
  async #linkLost(t: Incoming, link: PeerLink): Promise<void> {
    const current = () => this.#incoming.get(t.fid) === t && t.link === link;
    const next = await this.#host.replacement(link.user).catch(() => undefined);
    if (!current()) return; // offered again meanwhile
    const why = `${link.user} disconnected`;
    if (!next) {
      await this.#fail(t, why, true);
      return;
    }
    t.waitTimer = setTimeout(() => {
      t.waitTimer = undefined;
      if (current()) void this.#fail(t, why, true);
    }, RESUME_WAIT_MS);
  }

  /** Goes on with `t` over `link`, from the bytes already written. */
  async #resume(t: Incoming, link: PeerLink): Promise<void> {
    // From now on, chunks still arriving on the old link are ignored.
    t.link = link;
    clearTimeout(t.waitTimer);
    t.waitTimer = undefined;
    await t.writing;
    if (this.#incoming.get(t.fid) !== t || t.link !== link) {
      await link.fc.send({ type: "file_reject", fid: t.fid, reason: "the transfer ended here" })
        .catch(() => {});
      return;
    }
    this.#watchEnd(link);
    await link.fc.send({ type: "file_accept", fid: t.fid, offset: t.at }).catch(() => {});
    this.#host.emit({
      type: "info",
      text: `${t.name} from ${t.from} goes on from byte ${t.at} over the ${
        pathOf(link)
      } path (the link moved)`,
    });
  }

  async #onChunk(link: PeerLink, data: Uint8Array): Promise<void> {
    if (data.length < HEADER) return;
    const fid = toHex(data.subarray(1, 17));
    const t = this.#incoming.get(fid);
    if (!t || t.link !== link) return; // unknown or cancelled transfer: ignore the rest
    const at = Number(new DataView(data.buffer, data.byteOffset + 17, 8).getBigUint64(0, false));
    const bytes = data.subarray(HEADER);
    if (at !== t.at || t.at + bytes.length > t.size) {
      await link.fc.send({ type: "file_cancel", fid, reason: "data out of order" }).catch(() => {});
      await this.#fail(t, `${t.from} sent data out of order`, true);
      return;
    }
    // Hashed while the write runs (both off the main thread for a large file, which meanwhile
    // opens the chunks behind this one). A resume waits for the write, and then counts its
    // bytes. The chunk's memory is handed back after this: neither may still be under way.
    const writing = writeAll(t.file, bytes).then(() => {
      t.at += bytes.length;
    });
    t.writing = writing.catch(() => {});
    const hashing = t.hash.update(bytes);
    const [wrote, hashed] = await Promise.allSettled([writing, hashing]);
    if (this.#incoming.get(fid) !== t) return; // ended meanwhile (cancelled, link lost)
    if (hashed.status === "rejected") {
      await link.fc.send({ type: "file_cancel", fid, reason: "the receiver failed" }).catch(
        () => {},
      );
      await this.#fail(t, `cannot check ${t.name}: ${(hashed.reason as Error).message}`, true);
      return;
    }
    if (wrote.status === "rejected") {
      // Disk full, or the like: this transfer ends, the link (and the chat on it) stays.
      const error = wrote.reason;
      const reason = "the receiver cannot write it to disk";
      await link.fc.send({ type: "file_cancel", fid, reason }).catch(() => {});
      await this.#fail(t, `cannot write ${t.name} to disk: ${(error as Error).message}`, true);
      return;
    }
    const now = Date.now();
    if (now - t.lastProgress >= PROGRESS_EVERY_MS) {
      t.lastProgress = now;
      this.#host.emit({
        ...progressEvent(
          { fid, direction: "in", peer: t.from, name: t.name, size: t.size },
          t.at,
          t.startOffset,
          t.startedAt,
          now,
        ),
        path: pathOf(link),
      });
    }
  }

  async #onEnd(link: PeerLink, fid: string, sha256: string): Promise<void> {
    const host = this.#host;
    const t = this.#incoming.get(fid);
    if (!t || t.link !== link) {
      if (this.#finished.get(fid)?.user === link.user.toLowerCase()) {
        await link.fc.send({ type: "file_done", fid, ok: true }).catch(() => {});
      }
      return;
    }
    this.#incoming.delete(fid);
    clearTimeout(t.waitTimer);
    t.file.close();
    const digest = await t.hash.digest().catch((error: Error) => error);
    // A hash that could not be finished says nothing against the data: the part stays aside to
    // resume. Corrupt or incomplete: nothing of it is kept, nothing reaches downloads.
    const failure = digest instanceof Error
      ? {
        told: "the receiver failed",
        reason: `cannot check ${t.name}: ${digest.message}; the part received is kept aside ` +
          `to resume`,
        kept: true,
      }
      : t.at !== t.size
      ? { reason: `incomplete: ${t.at} of ${t.size} bytes`, kept: false }
      : digest !== sha256
      ? {
        reason: "SHA-256 mismatch: the file was damaged on the way; it was discarded",
        kept: false,
      }
      : undefined;
    if (failure) {
      if (!failure.kept) await Deno.remove(t.partial).catch(() => {});
      await link.fc.send({
        type: "file_done",
        fid,
        ok: false,
        reason: failure.told ?? failure.reason,
      })
        .catch(() => {});
      host.emit({
        type: "transfer_failed",
        fid,
        direction: "in",
        peer: t.from,
        name: t.name,
        size: t.size,
        reason: failure.reason,
        bytes: t.at - t.startOffset,
        kept: failure.kept,
      });
      return;
    }
    const verified = digest as string; // a hash that could not be finished is a failure above
    let savedAs: string;
    try {
      savedAs = await this.#moveToDownloads(t.partial, t.name);
    } catch (error) {
      // Verified but not saved (downloads is in the way, not writable ...): the file stays aside,
      // so offering it again finishes at once. The link, and the chat on it, stay up.
      const reason = `cannot save ${t.name} in ${host.downloadsDir}: ${(error as Error).message}`;
      await link.fc.send({
        type: "file_done",
        fid,
        ok: false,
        reason: "the receiver cannot save it; it kept the file aside: share it again to retry",
      }).catch(() => {});
      host.emit({
        type: "transfer_failed",
        fid,
        direction: "in",
        peer: t.from,
        name: t.name,
        size: t.size,
        reason: `${reason}; the file is kept aside: once that is fixed, ask ${t.from} to share ` +
          `it again`,
        bytes: t.at - t.startOffset,
        kept: true,
      });
      return;
    }
    this.#finished.set(fid, { user: t.from.toLowerCase(), tag: t.tag, size: t.size });
    if (this.#finished.size > FINISHED_REMEMBERED) {
      this.#finished.delete(this.#finished.keys().next().value!);
    }
    await link.fc.send({ type: "file_done", fid, ok: true }).catch(() => {});
    this.#record(t.group ?? t.from, t.from, t.name, t.size, verified, t.group);
    host.emit({
      type: "transfer_done",
      fid,
      direction: "in",
      peer: t.from,
      name: t.name,
      size: t.size,
      bytes: t.at - t.startOffset,
      resumedFrom: t.startOffset,
      sha256: verified,
      savedAs,
    });
  }

  /**
   * Moves a verified file into downloads under `name`, or `name (1)`, `name (2)` ...: a
   * placeholder is created exclusively first, so an existing file is never overwritten.
   */
  async #moveToDownloads(partial: string, name: string): Promise<string> {
    await Deno.mkdir(this.#host.downloadsDir, { recursive: true, mode: 0o700 });
    for (let n = 0; n < 10_000; n++) {
      const target = join(this.#host.downloadsDir, n === 0 ? name : numberedName(name, n));
      try {
        (await Deno.open(target, { write: true, createNew: true, mode: 0o600 })).close();
      } catch (error) {
        if (error instanceof Deno.errors.AlreadyExists) continue;
        throw error;
      }
      try {
        await Deno.rename(partial, target);
      } catch (error) {
        await Deno.remove(target).catch(() => {}); // the placeholder, not a file of the user's
        throw error;
      }
      return target;
    }
    throw new TransferError("NO_NAME", `no free name for ${name} in downloads`);
  }

  async #fail(t: Incoming, reason: string, keep: boolean): Promise<void> {
    if (this.#incoming.get(t.fid) !== t) return;
    this.#incoming.delete(t.fid);
    clearTimeout(t.waitTimer);
    t.hash.close();
    try {
      t.file.close();
    } catch { /* closed */ }
    if (!keep) await Deno.remove(t.partial).catch(() => {});
    this.#host.emit({
      type: "transfer_failed",
      fid: t.fid,
      direction: "in",
      peer: t.from,
      name: t.name,
      size: t.size,
      reason: keep ? `${reason}; the part received is kept aside to resume` : reason,
      bytes: t.at - t.startOffset,
      kept: keep,
    });
  }

  #record(
    chat: string,
    from: string,
    name: string,
    size: number,
    sha256: string,
    group?: string,
  ): void {
    // A transfer that ends while the client closes (its hash or move was under way) would
    // otherwise fail on the closed store: the file is where it belongs, only the line is lost.
    if (this.#closed) return;
    this.#host.store.addMessage({
      id: crypto.randomUUID(),
      chat: group ? groupChat(group) : chat,
      sender: from,
      ts: Date.now(),
      text: `[file] ${name} (${size} bytes, sha256 ${sha256})`,
      outgoing: from.toLowerCase() === this.#host.user.toLowerCase(),
      mark: "**",
    });
  }

  /** Ends every transfer (logout, close); partial files stay for resuming. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const w of [...this.#waiting.values()]) {
      if (this.#drop(w, "closing")) void reject(w.link, w.offer.fid, "the receiver left");
    }
    for (const t of [...this.#incoming.values()]) await this.#fail(t, "closing", true);
    for (const t of this.#outgoing.values()) {
      t.cancelled = "closing";
      t.answer.resolve({ accepted: false, reason: "closing" });
      t.done.resolve({ ok: false, reason: "closing" });
    }
  }
}

class Progress {
  #last = 0;
  readonly #startedAt = Date.now();
  constructor(
    readonly host: TransferHost,
    readonly base: {
      fid: string;
      direction: "in" | "out";
      peer: string;
      name: string;
      size: number;
    },
    readonly offset: number,
    readonly link: PeerLink,
  ) {}

  update(at: number): void {
    const now = Date.now();
    if (now - this.#last < PROGRESS_EVERY_MS) return;
    this.#last = now;
    this.host.emit({
      ...progressEvent(this.base, at, this.offset, this.#startedAt, now),
      path: pathOf(this.link),
    });
  }
}

function progressEvent(
  base: { fid: string; direction: "in" | "out"; peer: string; name: string; size: number },
  at: number,
  offset: number,
  startedAt: number,
  now: number,
): Extract<ClientEvent, { type: "transfer_progress" }> {
  const seconds = Math.max(0.001, (now - startedAt) / 1000);
  const rate = (at - offset) / seconds;
  return {
    type: "transfer_progress",
    ...base,
    bytes: at,
    rate: Math.round(rate),
    eta: rate > 0 ? Math.round((base.size - at) / rate) : null,
  };
}

/**
 * Declines an offer. A reason over the protocol's limit would be refused as a whole, leaving the
 * sender waiting for an answer that never comes.
 */
function reject(link: PeerLink, fid: string, reason: string): Promise<void> {
  return link.fc.send({ type: "file_reject", fid, reason: reason.slice(0, MAX_WIRE_REASON) })
    .catch(() => {});
}

function withTimeout<T>(promise: Promise<T>, what: string, ms = ANSWER_TIMEOUT_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new TransferError("TIMEOUT", `${what} within ${ms / 1000} s`)),
      ms,
    );
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
