/**
 * Hot deploy: what the governor does when its components directory changes.
 * An added component starts, a removed one drains, and a changed one rolls
 * node by node: a new node on the new code starts held, the old node drains
 * and hands over its state, the new node imports it and serves, the old node
 * exits. New code that fails to start leaves the old nodes serving.
 */
import { IMPORT_STATE } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import { lastError } from "./children.ts";
import type { ControlCall } from "./ports.ts";
import type { ComponentChange } from "./scan.ts";
import type { GovernorConfig } from "./settings.ts";
import type { ComponentState, GovernorState } from "./state.ts";
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
    return comp;
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

  /** Starts a roll for each component whose code on disk differs from what its children run. */
  rollChanged(): void {
    for (const comp of this.state.components.values()) {
      if (comp.rolling || comp.removed || comp.hash === comp.badHash || this.state.locked(comp.name)) continue;
      const old = this.state.childrenOf(comp.name).filter((c) => !c.ending && c.hash !== comp.hash);
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
    for (const old of state.childrenOf(comp.name).filter((c) => !c.ending && c.hash !== hash)) {
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
      const exported = await supervisor.drain(old, true);
      try {
        await this.call(IMPORT_STATE, { state: exported ?? new Uint8Array() }, started.child.endpoint!, 30_000);
        started.child.phase = "ready";
        state.held.delete(started.child.pid);
        state.log.info(`${comp.name}: pid ${old.pid} handed ${exported?.length ?? 0} bytes of state to pid ${started.child.pid}`);
      } catch (err) {
        state.log.error(`${comp.name}: pid ${started.child.pid} did not take the state: ${NodeBinError.from(err)}`);
        started.child.phase = "ready";
      }
      await supervisor.awaitExit(old, 15_000);
    }
    comp.deployError = undefined;
  }
}
