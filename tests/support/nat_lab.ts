/**
 * A NAT lab made of Linux network namespaces, for tests of relaying and hole punching with
 * real NATs. A "public" segment (a bridge in the namespace `pub`, 203.0.113.0/24) holds the
 * server at 203.0.113.1 and any public clients; each "home" is a client namespace behind its
 * own router namespace that masquerades the home's LAN onto the public segment and drops (or
 * resets) every connection nobody inside asked for.
 *
 *   home0: client 192.0.2.2    -- router 192.0.2.1    | 203.0.113.10  --+
 *   home1: client 198.51.100.2 -- router 198.51.100.1 | 203.0.113.20  --+-- br0 in pub
 *   public client i: 203.0.113.(100 + i)                              --+   203.0.113.1
 *
 * Only RFC 5737 documentation addresses, on interfaces created inside the lab's own
 * namespaces (veth pairs are made directly in them), so nothing appears in the root
 * namespace and no packet can leave. Names carry the process id and a counter, so labs of
 * parallel tests never collide. `dispose` kills what runs inside and deletes the namespaces,
 * also when a test fails. Needs root, `ip` and `tc` (iproute2) and `nft` (nftables).
 */

/** How a home router maps ports: Linux MASQUERADE keeps the port; "symmetric" randomises it. */
export type NatType = "cone" | "symmetric";

export interface LabOptions {
  /** One entry per home: its router's NAT type (at most two homes). */
  homes: NatType[];
  /** Clients on the public segment, reachable by everyone. */
  publicClients?: number;
  /** What routers do with connections nobody inside asked for. */
  inbound?: "drop" | "reject";
}

export interface NatLab extends AsyncDisposable {
  /** The namespace the server runs in, and its address. */
  serverNs: string;
  serverHost: string;
  /** The client namespace of each home, in order. */
  homes: string[];
  /** The public clients' namespaces. */
  publicClients: string[];
  /** The public (WAN) address of each home's router. */
  homeAddresses: string[];
  /**
   * Drops every packet between two homes' public addresses (both ways) in the public
   * segment, as a path that dies while both ends and the server stay reachable; returns
   * the undo.
   */
  cutBetweenHomes(a: number, b: number): Promise<() => Promise<void>>;
  /**
   * Limits what a home's router sends out to `mbit` megabits per second (a slow uplink: every
   * path from that home, direct or through the server, goes through it).
   */
  limitUplink(home: number, mbit: number): Promise<void>;
}

let labCounter = 0;

/** True when this process can build labs: root, with `ip netns`, `tc` and `nft` at hand. */
export function canBuildLab(): boolean {
  if (Deno.build.os !== "linux" || Deno.uid() !== 0) return false;
  try {
    const ip = new Deno.Command("ip", { args: ["netns", "list"], stdout: "null", stderr: "null" })
      .outputSync();
    const nft = new Deno.Command("nft", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync();
    const tc = new Deno.Command("tc", { args: ["-V"], stdout: "null", stderr: "null" })
      .outputSync();
    return ip.success && nft.success && tc.success;
  } catch {
    return false;
  }
}

async function run(cmd: string, args: string[], stdin?: string): Promise<void> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const { success, stderr } = await child.output();
  if (!success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(stderr).trim()}`);
  }
}

/** Runs `ip ...` inside namespace `ns`. */
function inNs(ns: string, ...args: string[]): Promise<void> {
  return run("ip", ["netns", "exec", ns, ...args]);
}

const HOME_LANS = [
  { net: "192.0.2.0/24", router: "192.0.2.1", client: "192.0.2.2" },
  { net: "198.51.100.0/24", router: "198.51.100.1", client: "198.51.100.2" },
] as const;

/** True while a process with this id exists (Linux: its /proc entry). */
function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Deletes the namespaces of labs whose test process is gone (killed before its `finally` ran):
 * names are `cnl<pid>x<counter>-...`, and a lab is only ever torn down by the process that built
 * it, so a dead pid's namespaces are nobody's. A live pid's are left alone, even if that pid was
 * reused by another process since: a leftover is only a leftover, never a collision, because a
 * new lab's names carry its own (live) pid.
 */
export async function sweepStaleLabs(): Promise<string[]> {
  const out = await new Deno.Command("ip", { args: ["netns", "list"], stderr: "null" }).output()
    .catch(() => undefined);
  if (!out?.success) return [];
  const stale = new TextDecoder().decode(out.stdout).split("\n")
    .map((line) => line.split(" ")[0]!)
    .filter((name) => {
      const pid = /^cnl(\d+)x\d+-/.exec(name)?.[1];
      return pid !== undefined && Number(pid) !== Deno.pid && !alive(Number(pid));
    });
  await teardown(stale);
  return stale;
}

/** Builds a lab; tear it down with `await using`. */
export async function startNatLab(options: LabOptions): Promise<NatLab> {
  if (options.homes.length > HOME_LANS.length) throw new RangeError("at most two homes");
  await sweepStaleLabs();
  // Short names: interface names are limited to 15 characters, namespace names are not.
  const prefix = `cnl${Deno.pid}x${++labCounter}-`;
  const pub = `${prefix}pub`;
  const created: string[] = [];
  const lab: NatLab = {
    serverNs: pub,
    serverHost: "203.0.113.1",
    homes: [],
    publicClients: [],
    homeAddresses: [],
    cutBetweenHomes: () => Promise.reject(new Error("the lab is not built yet")),
    limitUplink: () => Promise.reject(new Error("the lab is not built yet")),
    async [Symbol.asyncDispose]() {
      await teardown(created);
    },
  };
  try {
    const addNs = async (name: string) => {
      await run("ip", ["netns", "add", name]);
      created.push(name);
      await inNs(name, "ip", "link", "set", "lo", "up");
    };
    await addNs(pub);
    await inNs(pub, "ip", "link", "add", "br0", "type", "bridge");
    await inNs(pub, "ip", "addr", "add", "203.0.113.1/24", "dev", "br0");
    await inNs(pub, "ip", "link", "set", "br0", "up");
    // The bridge filters nothing by default; the cut rules below use the bridge family.
    let port = 0;
    const plug = async (ns: string, ifname: string) => {
      const bridgePort = `p${port++}`;
      await run("ip", [
        "link",
        "add",
        ifname,
        "netns",
        ns,
        "type",
        "veth",
        "peer",
        "name",
        bridgePort,
        "netns",
        pub,
      ]);
      await inNs(pub, "ip", "link", "set", bridgePort, "master", "br0");
      await inNs(pub, "ip", "link", "set", bridgePort, "up");
    };
    for (const [i, type] of options.homes.entries()) {
      const lan = HOME_LANS[i]!;
      const wan = `203.0.113.${10 * (i + 1)}`;
      const router = `${prefix}r${i}`;
      const client = `${prefix}h${i}`;
      await addNs(router);
      await addNs(client);
      await plug(router, "wan");
      await run("ip", [
        "link",
        "add",
        "lan",
        "netns",
        router,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        client,
      ]);
      await inNs(router, "sysctl", "-qw", "net.ipv4.ip_forward=1");
      await inNs(router, "ip", "addr", "add", `${wan}/24`, "dev", "wan");
      await inNs(router, "ip", "addr", "add", `${lan.router}/24`, "dev", "lan");
      await inNs(router, "ip", "link", "set", "wan", "up");
      await inNs(router, "ip", "link", "set", "lan", "up");
      await inNs(router, "ip", "route", "add", "default", "via", "203.0.113.1");
      const masquerade = type === "symmetric" ? "masquerade random,fully-random" : "masquerade";
      const unsolicited = options.inbound === "reject" ? "reject with tcp reset" : "drop";
      await run(
        "ip",
        ["netns", "exec", router, "nft", "-f", "-"],
        `
table ip natlab {
  chain c_post { type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" ip saddr ${lan.net} ${masquerade}
  }
  chain c_fwd { type filter hook forward priority filter; policy drop;
    iifname "lan" oifname "wan" accept
    iifname "wan" oifname "lan" ct state established,related accept
  }
  chain c_in { type filter hook input priority filter; policy accept;
    iifname "wan" ct state established,related accept
    iifname "wan" ip protocol icmp accept
    iifname "wan" meta l4proto tcp ${unsolicited}
    iifname "wan" drop
  }
}
`,
      );
      await inNs(client, "ip", "addr", "add", `${lan.client}/24`, "dev", "eth0");
      await inNs(client, "ip", "link", "set", "eth0", "up");
      await inNs(client, "ip", "route", "add", "default", "via", lan.router);
      lab.homes.push(client);
      lab.homeAddresses.push(wan);
    }
    for (let i = 0; i < (options.publicClients ?? 0); i++) {
      const ns = `${prefix}c${i}`;
      await addNs(ns);
      await plug(ns, "eth0");
      await inNs(ns, "ip", "addr", "add", `203.0.113.${100 + i}/24`, "dev", "eth0");
      await inNs(ns, "ip", "link", "set", "eth0", "up");
      lab.publicClients.push(ns);
    }
    lab.cutBetweenHomes = async (a, b) => {
      const x = lab.homeAddresses[a]!;
      const y = lab.homeAddresses[b]!;
      const table = `cut${a}${b}`;
      await run(
        "ip",
        ["netns", "exec", pub, "nft", "-f", "-"],
        `
table bridge ${table} {
  chain c_fwd { type filter hook forward priority filter; policy accept;
    ip saddr ${x} ip daddr ${y} drop
    ip saddr ${y} ip daddr ${x} drop
  }
}
`,
      );
      return () => inNs(pub, "nft", "delete", "table", "bridge", table);
    };
    lab.limitUplink = async (home, mbit) => {
      const router = `${prefix}r${home}`;
      if (!created.includes(router)) throw new RangeError(`no home ${home}`);
      await inNs(
        router,
        "tc",
        "qdisc",
        "add",
        "dev",
        "wan",
        "root",
        "tbf",
        "rate",
        `${mbit}mbit`,
        "burst",
        "64kb",
        "latency",
        "400ms",
      );
    };
    return lab;
  } catch (error) {
    await teardown(created);
    throw error;
  }
}

/** Kills every process inside the namespaces, then deletes them (leaving nothing behind). */
async function teardown(namespaces: string[]): Promise<void> {
  for (const ns of namespaces) {
    const out = await new Deno.Command("ip", { args: ["netns", "pids", ns], stderr: "null" })
      .output().catch(() => undefined);
    const pids = out?.success ? new TextDecoder().decode(out.stdout).split(/\s+/) : [];
    for (const pid of pids) {
      if (!/^\d+$/.test(pid)) continue;
      try {
        Deno.kill(Number(pid), "SIGKILL");
      } catch {
        // Gone already.
      }
    }
  }
  for (const ns of namespaces.toReversed()) {
    await run("ip", ["netns", "del", ns]).catch(() => {});
  }
}
