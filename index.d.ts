/// <reference types="node" />
import { EventEmitter } from 'events';

/** `https` option: paths of PEM files (read by the app workers). */
export interface HttpsOptions {
  /** path of the private key */
  key: string;
  /** path of the certificate */
  cert: string;
  /** path of the CA certificate */
  ca?: string;
}

/**
 * Options of {@link startCluster}, as egg-cluster 2.x takes them. Every option is
 * also passed on (with the master's additions such as `clusterPort`) to the
 * agent and app workers, whose `new Application(options)` / `new Agent(options)` get them.
 */
export interface ClusterOptions {
  /**
   * The framework: an absolute path, or a package name looked up in
   * `baseDir/node_modules`, `process.cwd()/node_modules` (at call and at load
   * time) and up from this package's own directory. Default: `package.json`'s
   * `egg.framework` in `baseDir`, else `'egg'`.
   */
  framework?: string;
  /** Same as `framework` (egg-mock's name for it); used when `framework` is not set. */
  customEgg?: string;
  /** Directory of the application (must contain a package.json). Default: `process.cwd()`. */
  baseDir?: string;
  /**
   * Number of app workers. Default: the number of CPUs (`startMode: 'worker_threads'`: one per
   * entry of `ports`, else this many threads, default 1).
   */
  workers?: number | string;
  /**
   * `'process'` (default): the agent and the app workers are child processes.
   * `'worker_threads'`: they are threads of the master process (egg-cluster's thread mode),
   * named by their thread id where a process has its pid. Cannot be combined with
   * `maxMemoryRestart` or a debugger.
   */
  startMode?: 'process' | 'worker_threads';
  /** `startMode: 'worker_threads'`: app thread `i` listens on `ports[i]` (one thread per port). */
  ports?: number[];
  /**
   * Listening port. Default: `config.cluster.listen.port` of the app, else 7001
   * (egg's default); 8443 when `https` is set.
   */
  port?: number | string;
  /**
   * HTTPS: `{ key, cert, ca? }` file paths (`true` is the deprecated form, taking
   * `options.key` / `options.cert`).
   */
  https?: HttpsOptions | boolean;
  /**
   * Sticky sessions: the master listens on `port` and hands each connection to a
   * worker chosen from the client IP; the workers listen on an internal port on 127.0.0.1.
   */
  sticky?: boolean;
  /**
   * Sticky mode behind a load balancer: where the client address is read from instead of
   * the TCP peer — `'proxy-protocol'` (PROXY v1/v2; the header is consumed before the
   * worker reads) or an HTTP header name such as `'x-forwarded-for'` or `'forwarded'`
   * (peeked, the worker still receives it). Read within 8 KiB and 500 ms, only from a
   * peer in `stickyTrustedProxies`; otherwise the peer address is used.
   */
  stickyKey?: string;
  /** Addresses or CIDRs of the proxies whose `stickyKey` is believed. Default: loopback. */
  stickyTrustedProxies?: string[];
  /**
   * `SO_REUSEPORT`: the master binds one socket per worker slot and keeps it, so the kernel
   * balances connections over the workers and a dead worker's queued connections wait for its
   * replacement. Also `config.cluster.listen.reusePort`. Default: false.
   */
  reusePort?: boolean;
  /** Also listen on this port with plain HTTP (next to `https`). */
  debugPort?: number;
  /** Module(s) to `require()` in the agent and app workers before the framework. */
  require?: string | string[];
  /** Write the master's pid to this file (directories are created); removed at exit. */
  pidFile?: string;
  /** The egg server env (`local`, `unittest`, `prod`...). Default: `process.env.EGG_SERVER_ENV`. */
  env?: string;
  /** Plugins to enable/override (egg-mock uses it). */
  plugins?: Record<string, any> | null;
  /** Process title option of egg-scripts, passed through to the workers' argv. */
  title?: string;
  /**
   * Replace an app worker whose RSS goes over this (bytes, or `'512M'`-style), through a
   * rolling reload of that worker: never killed mid-request.
   */
  maxMemoryRestart?: number | string;
  /** How often the app workers' RSS is checked, in ms. Default: 30000. */
  memoryCheckInterval?: number;
  /**
   * After SIGTERM/SIGINT/SIGQUIT, how long (ms) the workers go on accepting and serving before
   * the close begins; `/readyz` answers 503 from the signal on. For Kubernetes rolling updates
   * (the endpoints are updated a few seconds after the SIGTERM). A second signal ends the
   * delay. Default: `EGG_CLUSTER_RS_SHUTDOWN_DELAY`, else 0 (egg's behaviour).
   */
  shutdownDelay?: number;
  /**
   * How many replacement app workers a rolling reload boots at once (each old worker retires
   * as soon as its own replacement serves). Default: `EGG_CLUSTER_RS_RELOAD_CONCURRENCY`, else
   * the CPUs the master may use (cgroup quota honoured); `1` is one slot at a time. See
   * docs/reload.md.
   */
  reloadConcurrency?: number;
  /**
   * A serving child whose event loop gave no heartbeat this long (ms) is hung: reported (where
   * it is stuck, a diagnostic report in `run/`) and replaced. 0 turns it off. Default:
   * `EGG_CLUSTER_RS_WORKER_TIMEOUT`, else 60000. See docs/self-healing.md.
   */
  workerTimeout?: number;
  /**
   * Serve `/metrics` (Prometheus), `/healthz` and `/readyz` from the master itself on this
   * address (`host` defaults to `127.0.0.1`). Off unless set.
   */
  metrics?: { port: number; host?: string };
  /** Anything else is passed through to the workers. */
  [key: string]: any;
}

/** What the master reports when the cluster is ready (egg-ready's data for the parent). */
export interface ReadyInfo {
  /** The listening port; absent when the app listens on a unix socket (`config.cluster.listen.path`). */
  port?: number;
  debugPort?: number;
  /** e.g. `http://127.0.0.1:7001` (the socket path for a unix-socket app) */
  address: string;
  protocol: 'http' | 'https';
}

/**
 * The Promise returned by {@link createCluster}. Where no native binary loads (docs/platforms.md)
 * it resolves with `undefined`, `master` is the JS master (egg-cluster / @eggjs/cluster) and
 * `reload()`, `status()`, `upgrade()` (rejected) and `scale()` (thrown) fail with `ERR_EGG_CLUSTER_NATIVE_ONLY`.
 */
export interface ClusterPromise extends Promise<ReadyInfo> {
  /**
   * Emits the `{ to: 'master' }` messages (from the workers or the parent) that the
   * native master does not handle itself, as `(data)` under their `action`.
   */
  readonly master: EventEmitter;
  /**
   * Rolling reload: replaces the app workers one slot at a time (the new worker listens
   * before the old one drains and exits), as `SIGUSR2` does. Resolves with the outcome; a
   * reload asked for during a reload is queued once. Also emitted as `reload-done` on `master`.
   */
  reload(): Promise<ReloadResult>;
  /**
   * Runs `workers` app workers: new ones start, `reloadConcurrency` booting at a time, extra ones
   * are drained (`SIGTTIN`/`SIGTTOU` add/retire one). Capped at `EGG_CLUSTER_RS_MAX_WORKERS`
   * (default four per CPU), with a WARN line.
   */
  scale(workers: number): void;
  /** The cluster's status snapshot (also `{to: 'master', action: 'cluster-status'}`, the CLI's `status`). */
  status(): Promise<ClusterStatus>;
  /**
   * Master upgrade (docs/upgrade.md), as `SIGHUP` and `egg-cluster-rs upgrade` do: a new master
   * started with this one's command line takes the listening sockets over and boots its own
   * agent and app workers; once it is ready this master closes and exits 0. Resolves with the
   * outcome: `{ ok: true, pid }` (the new master, this one is closing) or `{ ok: false, error }`
   * (refused, or the new master failed and was stopped: this tree serves on). Refused with an
   * IPC parent, as PID 1, in worker_threads mode, before ready and while closing.
   */
  upgrade(): Promise<UpgradeResult>;
}

/** The outcome of {@link ClusterPromise.upgrade}. */
export type UpgradeResult = { ok: true; pid: number } | { ok: false; error: string };

/** A relay/hand-over counter set (per process; the master's are totals). */
export interface RelayCounters {
  /** Messages sent by the process and routed by the master. */
  messagesRelayed: number;
  bytesRelayed: number;
  /** Sticky connections handed to the worker. */
  stickyHandedOver: number;
  /** Scrapes of /metrics the child did not answer in time (master: all). */
  scrapeTimeouts: number;
}

/** What a child's heartbeat carries, cumulative since it started but `elu` and `inFlight` (docs/observability.md). */
export interface ChildStats {
  /** event-loop utilization over the last heartbeat interval, 0..1 */
  elu: number;
  /** ms the event loop was busy */
  busyMs: number;
  heapUsed: number;
  heapTotal: number;
  /** ms spent in garbage collection */
  gcMs: number;
  /** app workers: the requests of the servers the master hands sockets to */
  http?: {
    /** responses by status class 1xx..5xx, then those cut off before the end */
    codes: [number, number, number, number, number, number];
    inFlight: number;
    /** requests per duration bucket (not cumulative): <= 1, 2.5, 5, 10, 25, 50, 100, 250, 500 ms, 1, 2.5, 5, 10 s, then more */
    buckets: number[];
    /** the durations' sum, seconds */
    sum: number;
  };
}

export interface ClusterStatus {
  master: RelayCounters & {
    pid: number;
    phase: 'starting' | 'ready' | 'reloading' | 'closing';
    /** ms since the epoch */
    startedAt: number;
    uptimeMs: number;
    /** app workers wanted, and serving on the app's port */
    workers: number;
    serving: number;
    /** what /healthz and /readyz answer */
    healthy: boolean;
    ready: boolean;
    reforks: number;
    /** the delay before the next refork of a crash loop, 0 outside one */
    backoffMs: number;
    /** malformed lines from children, dropped */
    malformed: number;
    /** children found hung, and hung or never-listening app workers replaced, so far */
    hung: number;
    hungReplaced: number;
    /** rolling reloads finished so far, and those of them that failed */
    reloads: number;
    reloadsFailed: number;
    /** why dead app workers are not replaced now (a crash loop's backoff, refork off), while some are missing */
    reforkHeld: string | null;
    /** the new master of an upgrade in progress (docs/upgrade.md), once started */
    upgradingTo: number | null;
    rss: number | null;
    /** CPU % since the previous status (since start for the first), 100 = one core */
    cpu: number | null;
  };
  children: Array<RelayCounters & {
    role: 'agent' | 'app';
    id: number;
    pid: number;
    slot: number | null;
    state: 'waiting' | 'forked' | 'online' | 'listening' | 'serving' | 'retiring' | 'disconnected';
    startedAt: number;
    servingSince: number | null;
    /** unexpected exits in this slot (the agent's, for the agent) */
    restarts: number;
    lastExit: { pid: number; code: number | null; signal: string | null; at: number } | null;
    malformed: number;
    /** the event-loop lag its last heartbeat reported, ms */
    lagMs: number | null;
    /** when it was found hung (ms since the epoch), until it is gone */
    hungSince: number | null;
    rss: number | null;
    cpu: number | null;
    /** what its last heartbeat carried (null before the first) */
    stats: ChildStats | null;
  }>;
}

/** How a rolling reload ended (also sent to the parent as `reload-done`). */
export interface ReloadResult {
  ok: boolean;
  /** `reload-worker`, `SIGUSR2`, `api`, `egg-cluster-rs reload`, `maxMemoryRestart` or `workerTimeout`. */
  reason: string;
  /** `[oldPid, newPid]` of each slot replaced. */
  replaced: Array<[number, number]>;
  /** Why it stopped, when `ok` is false (the old workers keep serving). */
  error?: string;
}

/**
 * Start an egg application in cluster mode: this process becomes the master,
 * forking one agent worker and `workers` app workers.
 *
 * An async function (egg 4's launchers require one): bad options reject it with an `Error`
 * with `code: 'ERR_EGG_CLUSTER_OPTIONS'`, and an egg whose `engines.node` this Node.js does not
 * satisfy (egg 4.1 needs >= 22.18) with `code: 'ERR_EGG_CLUSTER_NODE_VERSION'`. Once every app
 * worker listens, `callback()` is called with no argument (egg-cluster's form) and the Promise
 * resolves.
 *
 * Where no native binary loads (macOS, Windows, an unsupported libc), it starts the JS master the
 * app's egg depends on instead — egg-cluster (egg 3) or @eggjs/cluster (egg 4) — after one warning
 * line; native-only options are errors (`ERR_EGG_CLUSTER_NATIVE_ONLY`), and so is the fallback
 * itself with `EGG_CLUSTER_RS_REQUIRE_NATIVE=1` (`ERR_EGG_CLUSTER_NO_NATIVE`). See docs/platforms.md.
 *
 * There is no error path after the options: as with egg-cluster and @eggjs/cluster, a start
 * that fails (the agent or an app worker dies before ready, a start timeout) logs why and
 * exits this process with code 1 — the callback is then never called and the Promise never
 * settles.
 */
export function startCluster(options?: ClusterOptions, callback?: () => void): Promise<ReadyInfo>;

/**
 * In an app worker or the agent: adds a prom-client `Registry` to those the master's `/metrics`
 * merges over the workers, besides prom-client's default registry, which it finds by itself
 * (docs/observability.md).
 */
export function addMetricsRegistry(registry: { getMetricsAsJSON(): Promise<object[]> | object[] }): void;

/**
 * {@link startCluster} started synchronously: throws (`ERR_EGG_CLUSTER_OPTIONS`,
 * `ERR_EGG_CLUSTER_NODE_VERSION`) on bad options, and the Promise carries the master's controls (`master`, `reload()`, `scale(n)`).
 */
export function createCluster(options?: ClusterOptions, callback?: () => void): ClusterPromise;

// egg's exports, so this package can be an app's framework, read from egg on first access:
// loading this package never loads egg. From CommonJS (and TypeScript compiled to it) they are
// named exports: `require('egg-cluster-rs').Application`. Node gives an ES module only
// `startCluster`, `createCluster` and the default export as named exports (the rest would be read,
// and egg loaded, at every `import`): there, `import eggClusterRs from 'egg-cluster-rs'` and
// `eggClusterRs.Application`, or egg's classes from 'egg' itself, as an app's own code has them.
export {
  start,
  Application,
  Agent,
  AppWorkerLoader,
  AgentWorkerLoader,
  Controller,
  Service,
  Subscription,
  BaseContextClass,
  Boot,
} from 'egg';

// and egg's commonly used types
export type {
  Context,
  EggAppConfig,
  EggAppInfo,
  EggPlugin,
  PowerPartial,
  IBoot,
  IService,
  IController,
  IMiddleware,
  IHelper,
  Router,
  Messenger,
  Singleton,
  EggLogger,
} from 'egg';

// egg 4's other exports, for an app on egg 4 (undefined on egg 3; `Context`, `Router` and
// `Singleton` are re-exported as values too). Typed loosely: egg 3's typings lack them.
export declare const Helper: any;
export declare const Request: any;
export declare const Response: any;
export declare const EggApplicationCore: any;
export declare const startEgg: any;
export declare const HttpClient: any;
export declare const ContextHttpClient: any;
export declare const CookieLimitExceedError: any;
export declare const MessageUnhandledRejectionError: any;

/** module.exports itself (with `__esModule`, which @eggjs/utils' importModule and TypeScript unwrap). */
declare const eggClusterRs: typeof import('./index');
export default eggClusterRs;
