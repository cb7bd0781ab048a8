/**
 * Hot deploy: what the governor does when its components directory changes.
 * An added component starts, a removed one drains, and a changed one rolls
 * node by node: a new node on the new code starts held, the old node drains
 * and hands over its state, the new node imports it and serves, the old node
 * exits. New code that fails to start leaves the old nodes serving.
 *
 * The hand-over is two-phase (container/process.ts): the old node keeps its
 * state until the new one has taken it. The governor only relays the sealed
 * bytes; when the new node refuses them (UNAUTHENTICATED: changed on the way,
 * or sealed under a key it does not hold; or its importState failed), the
 * old node takes its state back and serves again, the new one is stopped,
 * and the component reports a deployError.
 */
import { IMPORT_STATE } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import { lastError } from "./children.ts";
import type { ControlCall } from "./ports.ts";
import type { ComponentChange } from "./scan.ts";
import type { GovernorConfig } from "./settings.ts";
import type { Child, ComponentState, GovernorState } from "./state.ts";
import type { Supervisor } from "./supervisor.ts";

export class RollingDeploy {
  constructor(
    private readonly state: GovernorState,
    private readonly config: GovernorConfig,
    private readonly supervisor: Supervisor,
    /** Control calls to a child (the state import). */
    private readonly call: ControlCall,
  ) {}

  /** The state of a component found in the directory (made at its min, or revived if it had been removed). */
  addComponentState(name: string, hash: string): ComponentState {
    let comp = this.state.components.get(name);
    if (!comp) {
      comp = { name, hash, desired: 0, startFailures: 0, backoffUntil: 0, restarts: 0, capacityRequests: 0, rolling: false, removed: false };
      this.state.components.set(name, comp);
      comp.desired = this.config.limits(comp).min;
    }
    comp.hash = hash;
    comp.removed = false;
    // The directory's own code wins over code fetched from another host: its children roll onto it.
    comp.fetched = undefined;
    return comp;
  }

  /**
   * A component whose code was fetched from another host (code-share.ts),
   * in `root`: known at min 0 (the elastic loop starts what is asked for),
   * or moved to that code if it was fetched before at another hash (its
   * children roll onto it). A component of the directory keeps its own code:
   * then nothing changes and false is answered.
   */
  addFetchedComponent(name: string, hash: string, fetched: { from: string; root: string }): boolean {
    const { state } = this;
    let comp = state.components.get(name);
    if (comp && !comp.removed && !comp.fetched) return false;
    if (!comp) {
      comp = { name, hash, desired: 0, startFailures: 0, backoffUntil: 0, restarts: 0, capacityRequests: 0, rolling: false, removed: false };
      state.components.set(name, comp);
    }
    comp.fetched = fetched;
    if (comp.removed) comp.desired = 0;
    if (comp.hash !== hash || comp.removed) {
      comp.failed = undefined;
      comp.startFailures = 0;
      comp.backoffUntil = 0;
      comp.deployError = undefined;
    }
    comp.hash = hash;
    comp.removed = false;
    state.log.info(`component ${name} (${hash.slice(0, 12)}) known from code fetched from ${fetched.from}: min 0`);
    return true;
  }

  /** Applies the scanner's changes of the components directory. */
  onComponentsChanged(changes: ComponentChange[]): void {
    const { state } = this;
    for (const change of changes) {
      if (change.type === "added") {
        const comp = this.addComponentState(change.name, change.hash ?? "");
        comp.failed = undefined;
        comp.startFailures = 0;
        state.log.info(`component ${change.name} added`);
      } else if (change.type === "removed") {
        const comp = state.components.get(change.name);
        if (!comp) continue;
        comp.removed = true;
        state.log.info(`component ${change.name} removed: draining its nodes`);
        for (const child of state.childrenOf(comp.name)) if (!child.ending) void this.supervisor.drain(child, false);
      } else {
        const comp = state.components.get(change.name);
        if (!comp) continue;
        comp.hash = change.hash ?? comp.hash;
        // New code gets a fresh chance.
        comp.failed = undefined;
        comp.startFailures = 0;
        comp.backoffUntil = 0;
        comp.deployError = undefined;
        state.log.info(`component ${change.name} changed (${comp.hash.slice(0, 12)}): rolling its nodes`);
      }
    }
  }

  /**
   * `governor roll`: marks every child of `names` (all components when
   * empty) to be replaced, one at a time, state handed over, as a changed
   * component's are (rollChanged starts it). Throws NOT_FOUND for a name the
   * governor does not run.
   */
  rollNow(names: string[]): string[] {
    const comps = names.length ? names.map((n) => this.state.components.get(n)) : [...this.state.components.values()];
    const missing = names.filter((_, i) => !comps[i] || comps[i]!.removed);
    if (missing.length) {
      throw new NodeBinError("NOT_FOUND", `no component ${missing.map((n) => JSON.stringify(n)).join(", ")} here; running: ${[...this.state.components.values()].filter((c) => !c.removed).map((c) => c.name).join(", ") || "none"}`, { details: { component: missing[0]! } });
    }
    const now = this.state.clock.now();
    const rolled: string[] = [];
    for (const comp of comps as ComponentState[]) {
      if (comp.removed) continue;
      comp.rollBefore = now;
      rolled.push(comp.name);
    }
    this.state.log.info(`rolling every child of ${rolled.join(", ") || "no component"} (governor roll)`);
    return rolled;
  }

  /** Starts a roll for each component whose code on disk differs from what its children run, or that `governor roll` marked. */
  rollChanged(): void {
    for (const comp of this.state.components.values()) {
      if (comp.rolling || comp.removed || comp.hash === comp.badHash || this.state.locked(comp.name)) continue;
      const old = this.state.childrenOf(comp.name).filter((c) => !c.ending && isOld(comp, comp.hash, c));
      if (!old.length) continue;
      if (old.some((c) => c.phase === "starting")) continue; // let it come up first
      comp.rolling = true;
      void this.roll(comp, comp.hash).finally(() => (comp.rolling = false));
    }
  }

  /**
   * Replaces the old children of a component, one at a time: a new child on
   * the new code starts held, the old one drains and hands over its state, the
   * new one imports it and serves, the old one exits. New code that fails to
   * start leaves the old children serving and is reported.
   */
  private async roll(comp: ComponentState, hash: string): Promise<void> {
    const { state, supervisor } = this;
    for (const old of state.childrenOf(comp.name).filter((c) => !c.ending && isOld(comp, hash, c))) {
      if (comp.hash !== hash || state.stopping) return; // changed again: the next roll takes over
      const started = supervisor.spawn(comp, { hold: true, restarts: old.restarts });
      if (!started) return;
      const ok = await started.ready;
      if (!ok) {
        comp.badHash = hash;
        comp.deployError = `new code failed to start; old nodes keep serving: ${lastError(started.child.log) ?? "see the log"}`;
        state.log.error(`${comp.name}: ${comp.deployError}`);
        return;
      }
      // Give the other processes a renewal period to see the new node before the old one refuses messages.
      await state.clock.sleep(1000);
      const fresh = started.child;
      let exported: Uint8Array;
      try {
        exported = await supervisor.handOver(old);
      } catch (err) {
        const why = `pid ${old.pid} did not hand its state over: ${NodeBinError.from(err)}`;
        if (await this.keepOld(comp, hash, old, fresh, why)) return;
        // It cannot take anything back: it is gone (or stuck), and its state with it. The new node serves empty.
        state.log.error(`${comp.name}: ${why}; pid ${fresh.pid} starts with empty state`);
        supervisor.kill(old, "SIGTERM");
        exported = new Uint8Array();
      }
      try {
        await this.call(IMPORT_STATE, { state: exported }, fresh.endpoint!, 30_000);
      } catch (err) {
        const why = `pid ${fresh.pid} did not take the state: ${NodeBinError.from(err)}`;
        if (await this.keepOld(comp, hash, old, fresh, why)) return;
        state.log.error(`${comp.name}: ${why}; pid ${old.pid} cannot take it back either`);
      }
      fresh.phase = "ready";
      state.held.delete(fresh.pid);
      state.log.info(`${comp.name}: pid ${old.pid} handed ${exported.length} bytes of sealed state to pid ${fresh.pid}`);
      await supervisor.release(old);
      await supervisor.awaitExit(old, 15_000);
    }
    comp.deployError = undefined;
    if (comp.rollBefore !== undefined && !state.childrenOf(comp.name).some((c) => !c.ending && c.startedAt < comp.rollBefore!)) comp.rollBefore = undefined;
  }

  /**
   * A hand-over that did not happen: the old child takes its state back and
   * serves again (back in the table first), then the held new one is stopped
   * (its queued calls are refused unhandled, so they re-route to the old one).
   * The roll ends there, reported, until the code changes again. Resolves
   * false when the old child cannot be told (gone): nothing was changed.
   */
  private async keepOld(comp: ComponentState, hash: string, old: Child, fresh: Child, why: string): Promise<boolean> {
    const { state, supervisor } = this;
    try {
      await supervisor.takeBack(old, why);
    } catch (err) {
      state.log.warn(`${comp.name}: pid ${old.pid} cannot take its state back: ${NodeBinError.from(err)}`);
      return false;
    }
    comp.badHash = hash;
    comp.deployError = `the state hand-over failed (${why}); the old node keeps serving with its state`;
    state.log.error(`${comp.name}: ${comp.deployError}`);
    fresh.ending = "drain";
    state.held.delete(fresh.pid);
    supervisor.kill(fresh, "SIGTERM");
    await supervisor.awaitExit(fresh, 15_000);
    return true;
  }
}

/** A child a roll replaces: it runs other code than `hash`, or it started before a `governor roll` of its component. */
function isOld(comp: ComponentState, hash: string, child: Child): boolean {
  return child.hash !== hash || (comp.rollBefore !== undefined && child.startedAt < comp.rollBefore);
}
