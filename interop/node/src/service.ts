/**
 * A handler service: registers task handlers as endpoints of a NATS micro service (SPEC §2), runs each request
 * as an {@link Attempt} under the concurrency limit, sends the reply, and drains gracefully.
 */
import { Svcm, type Service, type ServiceInfo, type ServiceMsg } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import { Attempt } from "./attempt.js";
import {
  DEFAULT_CONCURRENCY,
  DEFAULT_QUEUE_GROUP,
  DEFAULT_SUBJECT_PREFIX,
  Header,
  NAME_PATTERN,
  SDK_NAME,
  SUBJECT_PATTERN,
  PROTOCOLS_METADATA,
} from "./constants.js";
import { Cancelled } from "./errors.js";
import { Limiter } from "./limiter.js";
import { EndpointStats } from "./micro-stats.js";
import { checkPattern, compose, recover, type Middleware, type Use } from "./middleware.js";
import { encodeReply, type Reply } from "./reply.js";
import { decodeRequest, unknownTaskTypeReply } from "./request.js";
import type { HandleOptions, Handler, Logger, ServiceOptions } from "./types.js";
import { natsWire, respond as respondTo, type Wire } from "./wire.js";

const DEFAULT_DRAIN_GRACE_MS = 25_000;
const MIN_RESTART_DELAY_MS = 250;
const MAX_RESTART_DELAY_MS = 30_000;

interface Registration {
  type: string;
  handler: Handler;
  options: HandleOptions;
  /** This endpoint's `nats micro stats` totals. */
  stats: EndpointStats;
  /** The handler inside its middleware chain; set by start(). */
  chained?: Handler;
}

/**
 * Micro endpoint names allow only letters, digits, `-` and `_`, but task types may hold `:`. SPEC §2: the name is
 * the type with every other character replaced by `_`; the subject keeps the type exactly and the endpoint
 * metadata `jetbridge.task_type` carries it.
 */
export function endpointName(type: string): string {
  return type.replace(/[^-\w]/g, "_");
}

/** The request's headers as a plain object (first value of each), for middleware. */
function plainHeaders(msg: ServiceMsg): Record<string, string> {
  const out: Record<string, string> = {};
  const h = msg.headers;
  if (!h) return out;
  for (const k of h.keys()) out[k] = h.get(k);
  return out;
}

export class JetbridgeService {
  readonly name: string;
  readonly version: string;
  readonly subjectPrefix: string;
  private readonly options: ServiceOptions;
  private readonly logger: Logger;
  private readonly limiter: Limiter;
  private readonly registrations = new Map<string, Registration>();
  private readonly uses: Use[] = [];
  private readonly running = new Map<Attempt, Promise<void>>();
  private micro: Service | undefined;
  private wire: Wire | undefined;
  private nc: NatsConnection | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;

  constructor(options: ServiceOptions) {
    this.options = options;
    this.name = options.name;
    this.version = options.version;
    this.subjectPrefix = options.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX;
    if (!SUBJECT_PATTERN.test(this.subjectPrefix)) {
      throw new TypeError(`subject prefix ${JSON.stringify(this.subjectPrefix)} is not a subject without wildcards`);
    }
    this.logger = options.logger ?? console;
    this.limiter = new Limiter(options.concurrency ?? DEFAULT_CONCURRENCY);
  }

  /** Registers the handler for one task type; call before {@link start}. Returns the service, for chaining. */
  handle(type: string, handler: Handler, options: HandleOptions = {}): this {
    if (this.micro) throw new Error("handlers must be registered before start()");
    if (!NAME_PATTERN.test(type) || type.length > 256) {
      throw new TypeError(`task type ${JSON.stringify(type)} must match ${NAME_PATTERN.source}`);
    }
    if (this.registrations.has(type)) throw new Error(`task type ${type} already has a handler`);
    // SPEC §2: two types with one endpoint name cannot share a service.
    const name = endpointName(type);
    const clash = [...this.registrations.keys()].find((t) => endpointName(t) === name);
    if (clash !== undefined) {
      throw new Error(`task types ${clash} and ${type} would share the micro endpoint name ${name}: serve them from two services`);
    }
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    this.registrations.set(type, { type, handler, options, stats: new EndpointStats() });
    return this;
  }

  /**
   * Adds middleware around every handler (`use(mw)`) or around the task types a pattern selects
   * (`use("email:*", mw)`: `*`, an exact type, or a prefix ending in `*`). Global middleware run outside every
   * group whatever the order of the calls, and each kind in the order of the calls,
   * inside the built-in error recovery; call before {@link start}. Returns the service, for chaining.
   */
  use(middleware: Middleware): this;
  use(pattern: string, middleware: Middleware): this;
  use(a: string | Middleware, b?: Middleware): this {
    if (this.micro) throw new Error("middleware must be added before start()");
    const [pattern, middleware] = typeof a === "string" ? [a, b] : ["*", a];
    checkPattern(pattern);
    if (typeof middleware !== "function") throw new TypeError("middleware must be a function (task, next) => ...");
    this.uses.push({ pattern, middleware, global: typeof a !== "string" });
    return this;
  }

  /** The task types this service handles. */
  get taskTypes(): string[] {
    return [...this.registrations.keys()];
  }

  /** Attempts received and not yet replied to (running or waiting for a slot). */
  get inFlight(): number {
    return this.running.size;
  }

  /** The micro service's info (what `nats micro info` shows); undefined before start. */
  info(): ServiceInfo | undefined {
    return this.micro?.info();
  }

  /**
   * Subscribes every endpoint on `nc`. The connection stays the caller's: drain() does not close it. Give it
   * `maxReconnectAttempts: -1` (as {@link connectNats} and `serve` do) so that a server restart or a cluster
   * failover is ridden out: nats.js re-subscribes on reconnect, and replies of attempts that ran meanwhile are
   * sent once it is back.
   */
  async start(nc: NatsConnection): Promise<this> {
    if (this.micro) throw new Error("service already started");
    if (this.registrations.size === 0) throw new Error("register at least one handler before start()");
    this.nc = nc;
    this.wire = natsWire(nc);
    const chain: Use[] = [{ pattern: "*", middleware: recover(this.logger), global: true }, ...this.uses];
    for (const r of this.registrations.values()) r.chained = compose(chain, r.type, r.handler);
    await this.register();
    return this;
  }

  /** Creates the micro service and its endpoints on the current connection. */
  private async register(): Promise<void> {
    const nc = this.nc!;
    // @nats-io/services pins its own @nats-io/nats-core; the connection interface is the same at runtime.
    const micro = await new Svcm(nc as never).add({
      name: this.name,
      version: this.version,
      description: this.options.description ?? "",
      queue: this.options.queue ?? DEFAULT_QUEUE_GROUP,
      metadata: {
        ...this.options.metadata,
        "jetbridge.protocols": PROTOCOLS_METADATA,
        "jetbridge.sdk": SDK_NAME,
      },
    });
    this.micro = micro;
    for (const registration of this.registrations.values()) {
      const { type, options } = registration;
      const subject = `${this.subjectPrefix}.${type}`;
      micro.addEndpoint(endpointName(type), {
        subject,
        metadata: { ...options.metadata, "jetbridge.task_type": type },
        handler: (err, msg) => {
          if (err) {
            this.logger.error(`jetbridge: endpoint for ${type} failed`, err);
            return;
          }
          this.onRequest(msg, registration);
        },
      });
      registration.stats.attach(micro, subject);
    }
    micro.stopped.then(
      (err) => this.onMicroStopped(micro, err),
      (err) => this.onMicroStopped(micro, err),
    );
  }

  /**
   * The micro service closes itself when one of its subscriptions ends ("required subscription ... stopped").
   * Unless we are draining or the connection is gone for good, that must not end the service: it is created
   * again, after a pause that doubles up to 30 s while re-creating keeps failing.
   */
  private onMicroStopped(micro: Service, err: unknown): void {
    if (this.draining || this.micro !== micro || this.nc?.isClosed()) {
      if (err && !this.draining) this.logger.error("jetbridge: service stopped", err);
      return;
    }
    this.logger.warn("jetbridge: micro service stopped; registering it again", err ?? "");
    const again = (delayMs: number): void => {
      this.restartTimer = setTimeout(() => {
        this.restartTimer = undefined;
        if (this.draining || this.nc?.isClosed()) return;
        this.register().then(
          () => this.logger.warn("jetbridge: micro service registered again"),
          (e) => {
            this.logger.error("jetbridge: registering the micro service again failed", e);
            again(Math.min(delayMs * 2, MAX_RESTART_DELAY_MS));
          },
        );
      }, delayMs);
    };
    again(MIN_RESTART_DELAY_MS);
  }

  /** SPEC §3.3: reject what cannot run, otherwise run it and reply when it is done. */
  private onRequest(msg: ServiceMsg, endpoint: Registration): void {
    const received = process.hrtime.bigint();
    const reply = (r: Reply) => this.respond(msg, r, endpoint.stats, received);
    const decision = decodeRequest(msg.data);
    if (decision.decision === "reject") {
      reply(decision.reply);
      return;
    }
    const { request, payload } = decision;
    // The body is authoritative (SPEC §3.1): its task_type picks the handler, whichever subject it came on.
    const registration = this.registrations.get(request.task_type);
    if (!registration) {
      reply(unknownTaskTypeReply(request));
      return;
    }
    const attempt = new Attempt({
      wire: this.wire!,
      request,
      payload,
      handler: registration.chained ?? registration.handler,
      logger: this.logger,
      headers: plainHeaders(msg),
      limiter: this.limiter,
    });
    const done = attempt.run().then((r) => {
      reply(r);
      this.running.delete(attempt);
    });
    this.running.set(attempt, done);
  }

  private respond(msg: ServiceMsg, reply: Reply, stats: EndpointStats, received: bigint): void {
    const encoded = encodeReply(reply, this.wire?.maxPayload ?? Number.MAX_SAFE_INTEGER);
    // SPEC protocol 1.1: retry, terminate and rejections are errors in `nats micro stats`.
    stats.count(Number(process.hrtime.bigint() - received), encoded.headers[Header.serviceError]);
    try {
      if (!respondTo(msg, encoded.data, encoded.headers)) {
        this.logger.warn("jetbridge: request had no reply subject; reply dropped");
      }
    } catch (err) {
      this.logger.error("jetbridge: reply not sent", err);
    }
  }

  /**
   * Stops taking requests, lets running attempts finish and reply, then resolves. Attempts still running after
   * the grace period (option `drainGraceMs`, default 25 s) have their signal aborted with reason `drain` and
   * are awaited too: a drain never abandons an attempt without a reply. Calling it again returns the same promise.
   */
  drain(graceMs: number = this.options.drainGraceMs ?? DEFAULT_DRAIN_GRACE_MS): Promise<void> {
    this.draining ??= this.doDrain(graceMs);
    return this.draining;
  }

  private async doDrain(graceMs: number): Promise<void> {
    clearTimeout(this.restartTimer);
    // stop() drains the endpoint subscriptions: after it, no request will reach onRequest again.
    if (this.micro && !this.micro.isStopped) await this.micro.stop();
    const all = () => Promise.all(this.running.values());
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<"grace">((resolve) => {
      timer = setTimeout(() => resolve("grace"), graceMs);
    });
    const first = await Promise.race([all(), graceOver]);
    clearTimeout(timer);
    if (first === "grace") {
      for (const attempt of this.running.keys()) attempt.abort(new Cancelled("drain", "service is draining"));
      await all();
    }
  }
}

/** Creates a handler service; register handlers with `handle`, then `start` it or pass it to `serve`. */
export function createService(options: ServiceOptions): JetbridgeService {
  return new JetbridgeService(options);
}
