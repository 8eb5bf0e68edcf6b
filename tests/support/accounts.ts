/** Test accounts: what a valid signup request carries, for tests that speak the protocol directly. */
import assert from "node:assert/strict";
import { mailKeyStatement } from "../../lib/crypto/ed25519.ts";
import { Identity } from "../../lib/peer/identity.ts";
import { MailKey } from "../../lib/peer/sealed_mail.ts";
import { RawConn } from "./raw_conn.ts";

/** The fields of a valid signup for `user` (fresh keys; the mail key signed by the identity). */
export async function signupFields(user: string, password = "secret-pw") {
  const { identity } = await Identity.generate();
  const mailKey = await MailKey.generate();
  return {
    type: "signup",
    user,
    password,
    publicKey: identity.publicKey,
    mailKey: mailKey.publicKey,
    mailKeySig: await identity.sign(mailKeyStatement(user, mailKey.publicKey)),
  } as const;
}

/**
 * The scrypt cost servers started inside a test process use: the one the suite gives spawned
 * servers (`CONFAB_PASSWORD_COST=10` in deno.json). At the default cost each signup and login
 * costs seconds of CPU on a loaded machine, and a request's 10 s deadline covers it.
 */
export const TEST_PASSWORD_COST = 10;

/** A user signed up and logged in over a raw control connection. */
export async function rawUser(port: number, user: string): Promise<RawConn> {
  const raw = await RawConn.connect(port);
  try {
    await raw.hello("client");
    await raw.secure("client-server");
    const signup = await raw.request({ ...await signupFields(user), id: 1 });
    assert.equal(signup.type, "ok", JSON.stringify(signup));
    const welcome = await raw.request({
      type: "login",
      id: 2,
      user,
      password: "secret-pw",
      peerPort: 5555,
    });
    assert.equal(welcome.type, "welcome", JSON.stringify(welcome));
    return raw;
  } catch (error) {
    await raw.close();
    throw error;
  }
}
