/**
 * Tests for what replaced node:path, node:util's styleText and node:net's isIP in the modules
 * every process loads (lib/util/paths.ts, lib/cli/style.ts, isIpAddress): the same results as
 * the Node functions, which a client no longer imports at start-up (node_crypto.ts says why).
 * tests/quick/client_imports.ts checks that a client loads no other Node module at start-up.
 */
import assert from "node:assert/strict";
import * as nodePath from "node:path";
import { isIP } from "node:net";
import { styleText } from "node:util";
import { basename, dirname, join } from "../../lib/util/paths.ts";
import { type Style, styled } from "../../lib/cli/style.ts";
import { isIpAddress } from "../../lib/client/server_session.ts";

Deno.test("join(), dirname() and basename() give node:path's results", () => {
  const joins = [
    ["a", "b"],
    ["/a", "b"],
    ["/a/", "/b/"],
    ["a", "..", ".."],
    ["/", "..", "x"],
    ["/tmp/x", "..", "y"],
    ["", ""],
    ["a/./b", "c"],
    ["/home/u/.confab/known_servers.json", ".."],
    ["a//b/"],
    ["/"],
    ["..", "a"],
    ["a", "../../b"],
    ["/a/b", "../.."],
    ["./x"],
    ["."],
    ["/home/alice/.confab", "alice", "partial", "3f2a-1024-bob.part"],
  ];
  for (const parts of joins) assert.equal(join(...parts), nodePath.join(...parts), `${parts}`);
  const paths = [
    "/a/b",
    "/a/b/",
    "a",
    "a/",
    "/",
    "//",
    "/a",
    "a/b/c",
    "",
    "./x",
    "../x",
    "/a//b//",
  ];
  for (const path of [...paths, "x.txt", "/tmp/holiday.mov", "dir/.hidden"]) {
    assert.equal(dirname(path), nodePath.dirname(path), `dirname(${JSON.stringify(path)})`);
    assert.equal(basename(path), nodePath.basename(path), `basename(${JSON.stringify(path)})`);
  }
});

Deno.test("styled() writes node:util's styleText sequences, alone and combined", () => {
  const styles: Style[] = [
    "bold",
    "dim",
    "inverse",
    "red",
    "green",
    "yellow",
    "blue",
    "magenta",
    "cyan",
    "redBright",
    "cyanBright",
  ];
  for (const style of styles) {
    assert.equal(styled(style, "text"), styleText(style, "text", { validateStream: false }));
  }
  assert.equal(
    styled(["red", "bold"], "text"),
    styleText(["red", "bold"], "text", { validateStream: false }),
  );
});

Deno.test("isIpAddress() agrees with node:net's isIP", () => {
  const hosts = [
    "127.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "192.0.2.17",
    "256.1.1.1",
    "1.2.3",
    "01.2.3.4",
    "1.2.3.4.5",
    "::1",
    "::",
    "fe80::1",
    "2001:db8::1",
    "::ffff:192.0.2.1",
    "[::1]",
    "localhost",
    "a:b",
    "1::2::3",
    "example.com",
    "192.0.2.1 ",
    "1::]@example.com/[::1",
    "::1]:80",
    "",
  ];
  for (const host of hosts) {
    assert.equal(isIpAddress(host), isIP(host) !== 0, JSON.stringify(host));
  }
});
