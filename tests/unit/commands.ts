/**
 * Unit tests for lib/client/commands.ts: `parseCommand()` outside a chat (every command and
 * its usage errors) and inside a chat (text, `/q`, `\q`, `/h`, `//text`, `\\text`, unknown
 * commands).
 */
import assert from "node:assert/strict";
import {
  type Command,
  commandNames,
  helpFor,
  lineForHistory,
  lineForScreen,
  parseCommand,
  parsePath,
} from "../../lib/client/commands.ts";

/** The message of an `invalid` result; fails the test for any other kind. */
function invalidMessage(command: Command): string {
  assert.equal(command.kind, "invalid", `expected invalid, got ${JSON.stringify(command)}`);
  return (command as { message: string }).message;
}

// ---- outside a chat ------------------------------------------------------------------------

Deno.test("parseCommand() reads help, ? , quit and exit", () => {
  assert.deepEqual(parseCommand("help", false), { kind: "help" });
  assert.deepEqual(parseCommand("?", false), { kind: "help" });
  assert.deepEqual(parseCommand("quit", false), { kind: "quit" });
  assert.deepEqual(parseCommand("exit", false), { kind: "quit" });
});

Deno.test("parseCommand() of a blank line outside a chat is empty", () => {
  assert.deepEqual(parseCommand("", false), { kind: "empty" });
  assert.deepEqual(parseCommand("   \t ", false), { kind: "empty" });
});

Deno.test("parseCommand() ignores extra whitespace between words", () => {
  assert.deepEqual(parseCommand("  chat \t  bob  ", false), { kind: "chat", user: "bob" });
});

Deno.test("parseCommand() reads signup with and without a password", () => {
  assert.deepEqual(parseCommand("signup alice s3cret!", false), {
    kind: "signup",
    user: "alice",
    password: "s3cret!",
  });
  assert.deepEqual(parseCommand("signup alice", false), {
    kind: "signup",
    user: "alice",
    password: undefined,
  });
});

Deno.test("parseCommand() gives signup's usage for no user or too many words", () => {
  for (const line of ["signup", "signup alice pw extra"]) {
    assert.equal(invalidMessage(parseCommand(line, false)), "usage: signup <user> [<password>]");
  }
});

Deno.test("parseCommand() reads `in <user> <password>`", () => {
  assert.deepEqual(parseCommand("in alice secret", false), {
    kind: "login",
    user: "alice",
    password: "secret",
    serverPort: undefined,
  });
});

Deno.test("parseCommand() reads `in <user>` without a password", () => {
  assert.deepEqual(parseCommand("in alice", false), {
    kind: "login",
    user: "alice",
    password: undefined,
    serverPort: undefined,
  });
});

Deno.test("parseCommand() reads a leading number of `in` as the server port", () => {
  assert.deepEqual(parseCommand("in 4242 alice pw", false), {
    kind: "login",
    user: "alice",
    password: "pw",
    serverPort: 4242,
  });
  assert.deepEqual(parseCommand("in 4242 alice", false), {
    kind: "login",
    user: "alice",
    password: undefined,
    serverPort: 4242,
  });
});

Deno.test("parseCommand() takes a lone number after `in` as a user name, not a port", () => {
  assert.deepEqual(parseCommand("in 4242", false), {
    kind: "login",
    user: "4242",
    password: undefined,
    serverPort: undefined,
  });
});

Deno.test("parseCommand() rejects a server port above 65535 with a message naming it", () => {
  const message = invalidMessage(parseCommand("in 70000 alice pw", false));
  assert.match(message, /server port/);
  assert.match(message, /70000/);
  invalidMessage(parseCommand("in 123456 alice", false));
});

Deno.test("parseCommand() gives in's usage for no user or too many words", () => {
  const usage = "usage: in [<server port>] <user> [<password>]";
  assert.equal(invalidMessage(parseCommand("in", false)), usage);
  assert.equal(invalidMessage(parseCommand("in alice pw extra", false)), usage);
  assert.equal(invalidMessage(parseCommand("in 4242 alice pw extra", false)), usage);
});

Deno.test("parseCommand() reads out and logout, and rejects arguments to them", () => {
  assert.deepEqual(parseCommand("out", false), { kind: "logout" });
  assert.deepEqual(parseCommand("logout", false), { kind: "logout" });
  assert.equal(invalidMessage(parseCommand("out now", false)), "usage: out");
});

Deno.test("parseCommand() reads contacts, contacts add/accept, contacts remove/rm/decline", () => {
  assert.deepEqual(parseCommand("contacts", false), { kind: "contacts" });
  assert.deepEqual(parseCommand("contact", false), { kind: "contacts" });
  assert.deepEqual(parseCommand("contacts add bob", false), { kind: "contact_add", user: "bob" });
  assert.deepEqual(parseCommand("contacts remove bob", false), {
    kind: "contact_remove",
    user: "bob",
  });
  assert.deepEqual(parseCommand("contacts rm bob", false), {
    kind: "contact_remove",
    user: "bob",
  });
  assert.deepEqual(parseCommand("contacts accept bob", false), {
    kind: "contact_add",
    user: "bob",
  });
  assert.deepEqual(parseCommand("contacts decline bob", false), {
    kind: "contact_remove",
    user: "bob",
  });
});

Deno.test("parseCommand() gives contacts' usage for a bad subcommand or word count", () => {
  const usage = "usage: contacts | contacts add|accept <user> | contacts remove|decline <user>";
  for (
    const line of [
      "contacts add",
      "contacts remove",
      "contacts add bob carol",
      "contacts list",
      "contacts bob",
    ]
  ) {
    assert.equal(invalidMessage(parseCommand(line, false)), usage, line);
  }
});

Deno.test("parseCommand() reads chat <user> and gives its usage otherwise", () => {
  assert.deepEqual(parseCommand("chat bob", false), { kind: "chat", user: "bob" });
  assert.equal(invalidMessage(parseCommand("chat", false)), "usage: chat <user|#group>");
  assert.equal(
    invalidMessage(parseCommand("chat bob carol", false)),
    "usage: chat <user|#group>",
  );
});

Deno.test("parseCommand() reads hanging, show and show <user>, and gives their usage otherwise", () => {
  assert.deepEqual(parseCommand("hanging", false), { kind: "hanging" });
  assert.equal(invalidMessage(parseCommand("hanging bob", false)), "usage: hanging");
  assert.deepEqual(parseCommand("show bob", false), { kind: "show", user: "bob" });
  assert.deepEqual(parseCommand("show", false), { kind: "show" });
  assert.equal(invalidMessage(parseCommand("show bob carol", false)), "usage: show [<user>]");
});

Deno.test("parseCommand() reads fingerprint with and without a user, and gives its usage otherwise", () => {
  assert.deepEqual(parseCommand("fingerprint", false), { kind: "fingerprint" });
  assert.deepEqual(parseCommand("  fingerprint  ", false), { kind: "fingerprint" });
  assert.deepEqual(parseCommand("fingerprint bob", false), { kind: "fingerprint", user: "bob" });
  assert.equal(
    invalidMessage(parseCommand("fingerprint bob carol", false)),
    "usage: fingerprint [<user>]",
  );
});

Deno.test("parseCommand() reads trust <user> and gives its usage otherwise", () => {
  assert.deepEqual(parseCommand("trust bob", false), { kind: "trust", user: "bob" });
  assert.equal(invalidMessage(parseCommand("trust", false)), "usage: trust <user>");
  assert.equal(invalidMessage(parseCommand("trust bob carol", false)), "usage: trust <user>");
});

Deno.test("parseCommand() names an unknown command and points to help", () => {
  const message = invalidMessage(parseCommand("frobnicate now", false));
  assert.match(message, /unknown command "frobnicate"/);
  assert.match(message, /help/);
});

Deno.test("parseCommand() cuts a long unknown command to 40 characters in the message", () => {
  const message = invalidMessage(parseCommand("x".repeat(500), false));
  assert.ok(message.includes(`"${"x".repeat(40)}"`), message);
  assert.ok(!message.includes("x".repeat(41)), message);
});

Deno.test("parseCommand() outside a chat does not treat text as a message", () => {
  assert.equal(parseCommand("hello there", false).kind, "invalid");
  assert.equal(parseCommand("/q", false).kind, "invalid");
});

// ---- inside a chat -------------------------------------------------------------------------

Deno.test("parseCommand() in a chat sends plain text as typed, spaces kept", () => {
  assert.deepEqual(parseCommand("hello there", true), { kind: "say", text: "hello there" });
  assert.deepEqual(parseCommand("  indented ", true), { kind: "say", text: "  indented " });
  // Words that are commands outside a chat are just text inside one.
  assert.deepEqual(parseCommand("quit", true), { kind: "say", text: "quit" });
  assert.deepEqual(parseCommand("help", true), { kind: "say", text: "help" });
});

Deno.test("parseCommand() in a chat reads /q, \\q and /quit as leaving", () => {
  for (const line of ["/q", "\\q", "/quit", "\\quit", "/q "]) {
    assert.deepEqual(parseCommand(line, true), { kind: "leave_chat" }, line);
  }
});

Deno.test("parseCommand() in a chat reads /h, \\h and /help as help", () => {
  for (const line of ["/h", "\\h", "/help"]) {
    assert.deepEqual(parseCommand(line, true), { kind: "help" }, line);
  }
});

Deno.test("parseCommand() in a chat sends //text as a message starting with /", () => {
  assert.deepEqual(parseCommand("//text", true), { kind: "say", text: "/text" });
  assert.deepEqual(parseCommand("//q", true), { kind: "say", text: "/q" });
  for (const line of ["/b", "\\b", "/back"]) {
    assert.deepEqual(parseCommand(line, true), { kind: "close_window" }, line);
  }
  assert.deepEqual(parseCommand("//", true), { kind: "say", text: "/" });
});

Deno.test("parseCommand() in a chat sends \\\\text as a message starting with \\", () => {
  assert.deepEqual(parseCommand("\\\\text", true), { kind: "say", text: "\\text" });
  assert.deepEqual(parseCommand("\\\\q", true), { kind: "say", text: "\\q" });
  assert.deepEqual(parseCommand("\\\\", true), { kind: "say", text: "\\" });
});

Deno.test("parseCommand() in a chat reads fingerprint and trust as text, not commands", () => {
  assert.deepEqual(parseCommand("fingerprint bob", true), { kind: "say", text: "fingerprint bob" });
  assert.deepEqual(parseCommand("trust bob", true), { kind: "say", text: "trust bob" });
});

Deno.test("parseCommand() in a chat rejects an unknown /command and says how to leave", () => {
  const message = invalidMessage(parseCommand("/x", true));
  assert.match(message, /unknown command "\/x"/);
  assert.match(message, /\/q/);
  assert.equal(parseCommand("\\x", true).kind, "invalid");
  assert.equal(parseCommand("/", true).kind, "invalid");
});

Deno.test("parseCommand() in a chat treats a blank line as empty, not a message", () => {
  assert.deepEqual(parseCommand("", true), { kind: "empty" });
  assert.deepEqual(parseCommand("   ", true), { kind: "empty" });
});

// ---- commands everywhere, paths, secrets ---------------------------------------------------

Deno.test("parseCommand() in a chat runs every command with a / in front", () => {
  const cases: [string, Command][] = [
    ["/show alice", { kind: "show", user: "alice" }],
    ["\\show alice", { kind: "show", user: "alice" }],
    ["/hanging", { kind: "hanging" }],
    ["/contacts", { kind: "contacts" }],
    ["/contacts add carol", { kind: "contact_add", user: "carol" }],
    ["/history bob 5", { kind: "history", target: "bob", limit: 5 }],
    ["/history", { kind: "history" }],
    ["/search big news", { kind: "search", words: ["big", "news"] }],
    ["/chat carol", { kind: "chat", user: "carol" }],
    ["/chat #3f1c2a", { kind: "chat", user: "#3f1c2a" }],
    ["/groups", { kind: "groups" }],
    ["/fingerprint bob", { kind: "fingerprint", user: "bob" }],
    ["/clear", { kind: "clear" }],
    ["/exit", { kind: "quit" }],
  ];
  for (const [line, expected] of cases) assert.deepEqual(parseCommand(line, true), expected, line);
  assert.deepEqual(parseCommand("/show", true), { kind: "show" });
  assert.match(invalidMessage(parseCommand("/show a b", true)), /usage: \/show \[<user>\]/);
});

Deno.test("parseCommand() outside a chat takes the / forms too, and says /q needs a chat", () => {
  assert.deepEqual(parseCommand("/contacts", false), { kind: "contacts" });
  assert.deepEqual(parseCommand("/show alice", false), { kind: "show", user: "alice" });
  assert.deepEqual(parseCommand("/u", false), { kind: "online_contacts" });
  assert.deepEqual(parseCommand("/h", false), { kind: "help" });
  assert.match(invalidMessage(parseCommand("/q", false)), /not in a chat/);
  assert.match(invalidMessage(parseCommand("//hello", false)), /not in a chat/);
  assert.deepEqual(parseCommand("clear", false), { kind: "clear" });
});

Deno.test("parseCommand() reads a path to share as a shell would: quotes, escapes, ~, dragged", () => {
  const home = Deno.env.get("HOME")!;
  const cases: [string, string][] = [
    ['/s "my file.txt"', "my file.txt"],
    ["/s 'my file.txt'", "my file.txt"],
    ["/s my\\ file.txt", "my file.txt"],
    ["/s ~/notes.txt", `${home}/notes.txt`],
    ["/s '/tmp/dragged dir/it''s.txt'", "/tmp/dragged dir/its.txt"],
    ["/s /tmp/plain.txt ", "/tmp/plain.txt"],
    ["/s file:///tmp/a%20b.txt", "/tmp/a b.txt"],
    ["share my\\ file.txt", "my file.txt"],
  ];
  for (const [line, path] of cases) {
    const c = parseCommand(line, true);
    assert.equal(c.kind, "share", line);
    assert.equal((c as { path: string }).path, path, line);
  }
  assert.equal(parsePath("it's.txt"), "it's.txt", "an unmatched quote is kept");
  assert.equal(parsePath("~", "/home/me"), "/home/me");
});

Deno.test("lineForHistory() drops a password typed on the line; lineForScreen() masks it", () => {
  assert.equal(lineForHistory("in alice secret-pw"), "in alice");
  assert.equal(lineForHistory("in 4242 alice secret-pw"), "in 4242 alice");
  assert.equal(lineForHistory("signup bob hunter22"), "signup bob");
  assert.equal(lineForHistory("/in alice pw123456"), "/in alice");
  assert.equal(lineForHistory("in alice"), "in alice");
  assert.equal(lineForHistory("chat bob"), "chat bob");
  assert.equal(lineForScreen("in alice secret-pw"), "in alice ******");
  assert.equal(lineForScreen("signup bob x"), "signup bob ******");
  assert.equal(lineForScreen("contacts add bob"), "contacts add bob");
  // Both words of a password change, and whatever follows the verb (a wrong count too).
  assert.equal(lineForHistory("password old-secret new-secret"), "password");
  assert.equal(lineForHistory("/passwd old-secret"), "/passwd");
  assert.equal(lineForHistory("password"), "password");
  assert.equal(lineForScreen("password old-secret new-secret"), "password ******");
});

Deno.test("parseCommand() reads password alone or with the current and the new one", () => {
  assert.deepEqual(parseCommand("password", false), { kind: "password" });
  assert.deepEqual(parseCommand("/passwd a-secret b-secret", true), {
    kind: "password",
    current: "a-secret",
    next: "b-secret",
  });
  const one = parseCommand("password only-one", false);
  assert.equal(one.kind, "invalid");
  assert.match((one as { message: string }).message, /usage: password/);
});

Deno.test("helpFor() shows what works where the user is", () => {
  assert.match(helpFor("logged_out"), /signup/);
  assert.doesNotMatch(helpFor("logged_out"), /contacts/);
  assert.doesNotMatch(helpFor("idle"), /signup/);
  assert.match(helpFor("idle"), /contacts add <user>/);
  assert.match(helpFor("chat"), /\/show \[<user>\]/);
  assert.match(helpFor("chat"), /\/q/);
  assert.doesNotMatch(helpFor("chat"), /^\s+signup/m);
  assert.deepEqual(commandNames("logged_out"), ["signup", "in", "clear", "help", "quit"]);
  assert.ok(commandNames("chat").every((c) => c.startsWith("/")));
});

Deno.test("parseCommand() reads the answers to file offers: accept, decline, /y, /n, offers", () => {
  const yes = (offer?: number) => ({
    kind: "answer_offer",
    accept: true,
    ...(offer ? { offer } : {}),
  });
  const no = (offer?: number) => ({
    kind: "answer_offer",
    accept: false,
    ...(offer ? { offer } : {}),
  });
  assert.deepEqual(parseCommand("accept", false), yes());
  assert.deepEqual(parseCommand("accept 3", false), yes(3));
  assert.deepEqual(parseCommand("decline 12", false), no(12));
  assert.deepEqual(parseCommand("/y", false), yes());
  assert.deepEqual(parseCommand("/y 2", true), yes(2));
  assert.deepEqual(parseCommand("/n", true), no());
  assert.deepEqual(parseCommand("/accept 4", true), yes(4));
  assert.deepEqual(parseCommand("offers", false), { kind: "offers" });
  assert.deepEqual(parseCommand("/offers", true), { kind: "offers" });
  // In a chat, a plain "y" is a message, not an answer.
  assert.deepEqual(parseCommand("y", true), { kind: "say", text: "y" });
  assert.match(invalidMessage(parseCommand("accept x", false)), /usage: accept \[<n>\]/);
  assert.match(invalidMessage(parseCommand("/y 0", true)), /usage: \/y \[<n>\]/);
  assert.match(invalidMessage(parseCommand("decline 1 2", false)), /usage: decline/);
  // Only digits, and no more than fit: what Number() reads otherwise is not the number typed.
  for (const odd of ["99999999999999999999", "0x10", "1e3", "1.0", "+2", "-1", "１"]) {
    assert.match(invalidMessage(parseCommand(`accept ${odd}`, false)), /usage: accept \[<n>\]/);
    assert.match(invalidMessage(parseCommand(`history bob ${odd}`, false)), /1 to 10000/);
  }
});

Deno.test("parseCommand() reads control characters in search words as separators", () => {
  // A NUL in a word made the search index fail: "unexpected: unterminated string".
  assert.deepEqual(parseCommand("search big\u0000news\x01", false), {
    kind: "search",
    words: ["big", "news"],
  });
  assert.match(invalidMessage(parseCommand("/search \u0000", true)), /usage: \/search <words>/);
});

Deno.test("parseCommand() refuses server port 0 for `in`: nothing to connect to there", () => {
  assert.match(invalidMessage(parseCommand("in 0 alice pw", false)), /from 1 to 65535, got "0"/);
  assert.equal(parseCommand("in 1 alice", false).kind, "login");
});
