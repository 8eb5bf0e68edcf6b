/** Test accounts: what a valid signup request carries, for tests that speak the protocol directly. */
import { mailKeyStatement } from "../../lib/crypto/ed25519.ts";
import { Identity } from "../../lib/peer/identity.ts";
import { MailKey } from "../../lib/peer/sealed_mail.ts";

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
