/**
 * The guide (README.md) runs as written: every code block in it is taken from the file and executed here, in
 * order, against a real nats-server and dispatcher, and what the prose says it prints is checked. A new block
 * that this test does not know fails it, so the guide cannot grow an untested sample.
 *
 * Two departures, both forced: the server of step 1 gets a free port instead of 4222 (so tests never collide),
 * and step 2's `interop/node/build.sh` is the build test.sh runs before any test (running it here would delete
 * the compiled tests while they run).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, it } from "node:test";
import { connect } from "@nats-io/transport-node";
import { freePort, skipReason as noServer } from "./helpers/nats-server.js";
import { packageRoot, repoRoot } from "./helpers/paths.js";
import { encodeJson, makeRequest } from "./helpers/requests.js";

const venvBin = join(repoRoot, ".venv/bin");
const skip = noServer || (existsSync(join(venvBin, "jetbridge")) ? false : `no ${venvBin}/jetbridge: run make venv`);

const blocks = [...readFileSync(join(packageRoot, "README.md"), "utf8").matchAll(/```(\w+)\n([\s\S]*?)```/g)].map(
  (m) => ({ lang: m[1]!, code: m[2]! }),
);
const claimed = new Set<number>();

/** The one block whose code starts with `start`; marks it as executed by this test. */
function block(start: string): string {
  const found = blocks.flatMap((b, i) => (b.code.startsWith(start) ? [i] : []));
  assert.equal(found.length, 1, `exactly one README block starts with ${JSON.stringify(start)}`);
  claimed.add(found[0]!);
  return blocks[found[0]!]!.code;
}

interface Running {
  child: ChildProcess;
  output: () => string;
  /** Resolves once the combined output contains `text`; rejects if the process exits first. */
  waitFor: (text: string) => Promise<void>;
  exit: Promise<number | null>;
}

/** Runs shell code with bash (which execs a single command, so signals reach the program), collecting its output. */
function start(code: string, cwd: string, env: NodeJS.ProcessEnv): Running {
  const child = spawn("bash", ["-c", code.trim()], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const waiters: Array<() => void> = [];
  const onData = (s: string) => {
    out += s;
    for (const w of [...waiters]) w();
  };
  child.stdout!.setEncoding("utf8").on("data", onData);
  child.stderr!.setEncoding("utf8").on("data", onData);
  const exit = new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  return {
    child,
    output: () => out,
    exit,
    waitFor: (text) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (!out.includes(text)) return;
          waiters.splice(waiters.indexOf(check), 1);
          resolve();
        };
        waiters.push(check);
        check();
        exit.then((c) => reject(new Error(`exited (${c}) before printing ${JSON.stringify(text)}:\n${out}`)));
      }),
  };
}

/** Runs shell code to its end; rejects unless it exits with `expected` (0: success). */
async function run(code: string, cwd: string, env: NodeJS.ProcessEnv, expected = 0): Promise<string> {
  const p = start(code, cwd, env);
  const status = await p.exit;
  assert.equal(status, expected, `${code.trim()} failed:\n${p.output()}`);
  return p.output();
}

const cleanup: Array<() => Promise<unknown> | void> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

async function stop(p: Running, signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
  return p.exit;
}

it("the guide's samples run as written and print what it says", { skip }, async () => {
  const work = mkdtempSync(join(tmpdir(), "jetbridge-node-guide-"));
  cleanup.push(() => rmSync(work, { recursive: true, force: true }));
  const port = await freePort();
  const url = `nats://127.0.0.1:${port}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${venvBin}:${process.env.PATH}`,
    NATS_URL: url,
    COLUMNS: "200",
    // npm as build.sh runs it: the clone's cache, no network when the cache has it, no audit chatter.
    npm_config_cache: join(repoRoot, ".cache/npm"),
    npm_config_prefer_offline: "true",
    npm_config_audit: "false",
    npm_config_fund: "false",
    npm_config_update_notifier: "false",
  };

  // 1. The server (on a free port) and the dispatcher, from the repository root.
  const serverCode = block(".venv/bin/nats-server -js");
  const server = start(`${serverCode.trim()} -a 127.0.0.1 -p ${port} -sd ${join(work, "js")}`, repoRoot, env);
  cleanup.push(() => stop(server));
  await server.waitFor("Server is ready");
  const dispatcher = start(block("NATS_URL=nats://127.0.0.1:4222 .venv/bin/jetbridge run").replace("nats://127.0.0.1:4222", url), repoRoot, env);
  cleanup.push(() => stop(dispatcher));
  await dispatcher.waitFor("dispatcher_started");

  // 2. Built by test.sh before this test runs.
  assert.equal(block("interop/node/build.sh").trim(), "interop/node/build.sh");
  assert.ok(existsSync(join(packageRoot, "dist/src/index.js")));

  // 3. The project, installing this package: the folder, since the guide's release tarball is tests/dist's to test.
  await run(block("mkdir greeter").replace("/path/to/jetbridge-0.1.0.tgz", join(repoRoot, "interop/node")), work, env);
  const project = join(work, "greeter");

  // 4. handler.js.
  writeFileSync(join(project, "handler.js"), block('import { Terminate, createService, serve } from "jetbridge";'));

  // 5. Run it: it prints `greeter: ready`, and the micro service answers.
  const handler = start(block("NATS_URL=nats://127.0.0.1:4222 node handler.js").replace("nats://127.0.0.1:4222", url), project, env);
  cleanup.push(() => stop(handler));
  await handler.waitFor("greeter: ready");
  const nc = await connect({ servers: url });
  const ping = JSON.parse(new TextDecoder().decode((await nc.request("$SRV.PING.greeter", undefined, { timeout: 5000 })).data));
  assert.equal(ping.name, "greeter");
  await nc.close();

  // 6. Enqueue and look at the results.
  const done = await run(block(`jetbridge enqueue greet '{"name": "Ada"}' --wait 30`), project, env);
  assert.match(done, /state\s+complete/);
  assert.ok(done.includes('{"greeting": "Hello, Ada!", "attempt": 1}'), done);
  const id = /^\s*id\s+(\S+)/m.exec(done)?.[1];
  assert.ok(id, done);
  const got = await run(block("jetbridge task get <id>").replace("<id>", id), project, env);
  assert.ok(got.includes(id) && /state\s+complete/.test(got), got);
  // exit code 1: the waited task ended other than complete (README's exit codes)
  const refused = JSON.parse(await run(block(`jetbridge enqueue greet '{"nope": 1}' --wait 30 --json`), project, env, 1));
  assert.equal(refused.state, "terminated");
  assert.equal(refused.last_err, 'expected a payload like {"name": "Ada"}');
  assert.equal(refused.last_err_code, "bad_payload");

  // Ctrl-C: it finishes what it runs, then exits cleanly.
  assert.equal(await stop(handler, "SIGINT"), 0);

  // Middleware: mailer.js, next to handler.js, run the same way.
  writeFileSync(join(project, "mailer.js"), block('import { Retry, createService, logging, serve, timeout } from "jetbridge";'));
  const mailer = start(`node mailer.js`, project, env);
  cleanup.push(() => stop(mailer));
  await mailer.waitFor("mailer: ready");
  const mc = await connect({ servers: url });
  const ask = async (to: string) => {
    const request = makeRequest({ task_type: "email:new", payload: { to } });
    const msg = await mc.request("jetbridge.task.email:new", encodeJson(request), { timeout: 10_000 });
    return { id: request.task_id, ...JSON.parse(new TextDecoder().decode(msg.data)) };
  };
  const sent = await ask("ada@example.com");
  assert.deepEqual(sent.result, { sent: "ada@example.com", checked: true });
  await mailer.waitFor('"outcome":"ok"');
  const line = JSON.parse(mailer.output().split("\n").find((l) => l.includes('"task_done"'))!);
  assert.deepEqual([line.task_id, line.task_type, line.outcome], [sent.id, "email:new", "ok"]);
  const blocked = await ask("bob@blocked.example");
  assert.deepEqual([blocked.status, blocked.error.code, blocked.retry_after_ms], ["retry", "blocked", 60_000]);
  await mc.close();
  assert.equal(await stop(mailer, "SIGINT"), 0);

  assert.deepEqual(
    blocks.map((_, i) => i).filter((i) => !claimed.has(i)),
    [],
    "every README block is executed by this test",
  );
});
