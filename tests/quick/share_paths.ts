/**
 * `/s` takes a path as people type or drag it into a terminal: in quotes, with `\ ` for a
 * space, with `~`, as a terminal quotes a dragged file, or as a `file://` URL. Line mode (the
 * parsing is the same on a terminal).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startServer, TestClient } from "../support/processes.ts";
import { addContacts, plainClient, plainSignUp } from "../support/tty.ts";

Deno.test("/s takes quoted, escaped, ~ and dragged paths", async () => {
  await using server = await startServer();
  // bob takes files from his contacts without asking: the test is about alice's paths.
  await using bob = await TestClient.start("bob", server, { args: ["--auto-accept", "contacts"] });
  await bob.signup("bob");
  const dir = await Deno.makeTempDir({ prefix: "confab-files-" });
  const home = await Deno.makeTempDir({ prefix: "confab-alice-" });
  try {
    await Deno.mkdir(join(dir, "dragged dir"));
    const files = ["my file.txt", "other file.txt", "notes.txt", "dragged dir/it's.txt", "a b.txt"];
    for (const f of files) await Deno.writeTextFile(join(dir, f), `contents of ${f}\n`);
    await using alice = plainClient("alice", server, home, { env: { HOME: dir } });
    await plainSignUp(alice, "alice");
    await alice.write("contacts add bob");
    await alice.out.waitFor((l) => l.includes("request sent to bob"), "the request");
    await addContacts([bob], "alice");
    await alice.write("chat bob");
    await alice.out.waitFor((l) => l.startsWith("chatting with bob"), "the chat");

    const lines: [string, string][] = [
      [`/s "${dir}/my file.txt"`, "my file.txt"],
      [`/s ${dir.replaceAll(" ", "\\ ")}/other\\ file.txt`, "other file.txt"],
      ["/s ~/notes.txt", "notes.txt"],
      [`/s '${dir}/dragged dir/it'\\''s.txt'`, "it's.txt"],
      [`/s file://${dir}/a%20b.txt`, "a b.txt"],
    ];
    for (const [line, name] of lines) {
      await alice.write(line);
      await alice.out.waitFor((l) => l.startsWith(`✓ sent ${name} `), `${name} sent (${line})`);
      const done = await bob.event("transfer_done", { name });
      assert.equal(
        await Deno.readTextFile(done.savedAs as string),
        `contents of ${files.find((f) => f.endsWith(name))}\n`,
      );
    }
    assert.ok(!alice.out.lines.some((l) => l.startsWith("error:")), alice.out.lines.join("\n"));
    await alice.write("/q");
    await alice.write("quit");
    assert.equal((await alice.exited()).code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(home, { recursive: true });
  }
});
