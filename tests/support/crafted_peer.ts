/**
 * A peer written by hand, for tests that play a hostile but authenticated user: it dials a
 * client's peer port, runs the real handshake (hello, Noise XX, then the signed auth exchange
 * as the dialer) with a real user's identity key, and from then on sends whatever the test
 * wants, including file offers and binary chunk frames the real client would never send.
 */
import { handshakeTranscript, type Identity, randomToken } from "../../lib/peer/identity.ts";
import { toBase64Url } from "../../lib/util/base64.ts";
import { DEADLINE_MS } from "./processes.ts";
import { type Frame, RawConn } from "./raw_conn.ts";

export class CraftedPeer implements AsyncDisposable {
  private constructor(readonly raw: RawConn) {}

  /**
   * Dials 127.0.0.1:`port` and authenticates as `me` (signing with `identity`) to `to`.
   * @throws when any step of the handshake is refused.
   */
  static async dial(
    port: number,
    options: { me: string; to: string; identity: Identity },
  ): Promise<CraftedPeer> {
    const raw = await RawConn.connect(port);
    try {
      await raw.hello("peer");
      const session = await raw.secure("peer");
      const channel = toBase64Url(session.handshakeHash);
      const nonce = randomToken();
      await raw.send({ type: "auth_init", from: options.me, to: options.to, nonce });
      const reply = await raw.next("auth_reply");
      // The listener's signature is not checked: this peer is the attacker, not the victim.
      const signature = await options.identity.sign(handshakeTranscript({
        signer: "initiator",
        initiator: options.me,
        responder: options.to,
        initiatorNonce: nonce,
        responderNonce: String(reply.nonce),
        channel,
      }));
      await raw.send({ type: "auth_finish", signature });
      await raw.next("auth_ok");
      return new CraftedPeer(raw);
    } catch (error) {
      await raw.close();
      throw error;
    }
  }

  send(message: { type: string; [field: string]: unknown }): Promise<void> {
    return this.raw.send(message);
  }

  /** Sends one binary frame: [0x00][16-byte file id][8-byte big-endian offset][data]. */
  async sendChunk(fid: string, offset: number, data: Uint8Array): Promise<void> {
    const body = new Uint8Array(1 + 16 + 8 + data.length);
    body[0] = 0x00;
    for (let i = 0; i < 16; i++) body[1 + i] = parseInt(fid.slice(i * 2, i * 2 + 2), 16);
    new DataView(body.buffer).setBigUint64(17, BigInt(offset), false);
    body.set(data, 25);
    await this.raw.write(await this.raw.frameOf(body));
  }

  /**
   * The next frame that is not liveness traffic; `ping`s are answered on the way (the other
   * side drops a link that stays silent).
   * @throws when it is not of `type`, or nothing comes within `ms`.
   */
  async next(type: string, ms = DEADLINE_MS): Promise<Frame> {
    const deadline = Date.now() + ms;
    for (;;) {
      const frame = await this.raw.next(undefined, Math.max(1, deadline - Date.now()));
      if (frame.type === "ping") {
        await this.send({ type: "pong", id: frame.id });
        continue;
      }
      if (frame.type === "pong") continue;
      if (frame.type !== type) {
        throw new Error(`expected a ${type} frame, got ${JSON.stringify(frame)}`);
      }
      return frame;
    }
  }

  close(): Promise<void> {
    return this.raw.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.raw.close();
  }
}
