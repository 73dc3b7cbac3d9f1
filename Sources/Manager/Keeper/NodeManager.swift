import EventLog
import Foundation
import Logging
import NIOPosix
import NodeControl
import Synchronization

/// The node manager (DESIGN §1, §5, §6): supervises postgres as its child, reports every
/// heartbeat, follows and replays the committed log, and drives postgres to the goal the
/// reducer derives, one transition-table action at a time, reporting every state reached.
public final class NodeManager: Sendable {
    public let configuration: NodeManagerConfiguration
    let postgres: PostgresNode
    let client: WitnessClient
    let logger: Logger
    let shared = Mutex(Shared())
    /// The addresses of the nodes' hosts, for pg_hba.conf.
    let addressBook = PeerAddressBook()
    /// Fences postgres when the lease checks stop (a frozen manager).
    let watchdog: Watchdog?
    /// Runs the operator's command when the node's role changes, if one is configured.
    let roleChangeHook: RoleChangeHook?
    /// systemd's notifications (`Type=notify`, `WatchdogSec=`), when run by systemd.
    let notify = SystemdNotify()
    /// The Prometheus registry served at `/metrics`, and what the manager records into it.
    let metricsEndpoint = MetricsEndpoint()
    let metrics: ManagerMetrics
    /// The event loop the manager's tasks and its witness connections run on (`run`).
    let executor = LoopExecutor(loop: MultiThreadedEventLoopGroup.singleton.next())
    /// Signalled when the follower applied new entries, or postgres ended: the control loop
    /// steps at once.
    let wake: WakeSignal
    /// Signalled when a report is acknowledged (the lease renewed): the lease loop checks it.
    let leaseWake: WakeSignal

    struct Shared {
        /// The state replayed from the log, as far as this manager read it.
        var state = ClusterState()
        /// The send time (this process's monotonic clock) of the last report whose entry
        /// committed, and that entry's index: the lease runs from the former (DESIGN §5).
        var lastAckedSentNanos: UInt64?
        var lastAckedIndex: UInt64 = 0
        /// Postgres was stopped because the lease ran out.
        var fenced = false
        /// The postmaster the lease fenced (being stopped); a postgres started since, by an
        /// action or by supervision, is held to the lease like any other.
        var fencedPostmaster: pid_t?
        var lastObservation: PostgresObservation?
        /// When the query behind `lastObservation` started (this process's monotonic clock).
        var lastObservedNanos: UInt64?
        /// When the observation loop last began a round (`/liveness`).
        var observationLoopNanos: UInt64?
        var stopping = false
        /// The watch of this standby's WAL receiver over the observations.
        var receiverWatch = ReceiverWatch()
        /// When this standby stopped following its primary, at the latest (monotonic clock):
        /// set by the action that reaches report_lsn, cleared by the next action.
        var followingEndedNanos: UInt64?
        /// Since when the upstream has been found to lack WAL this standby needs.
        var upstreamLacksWALSince: ContinuousClock.Instant?
        /// Whether the replayed log has shown this node registered.
        var registered = false
        /// The first replay (a linearizable read of the whole log) is done; the follower's
        /// stream keeps `state` current from there.
        var replayed = false
        /// Node hosts that did not resolve at the last pg_hba.conf check (warned about once).
        var unresolvedHosts: Set<String> = []
        /// The load of the certificate files last copied for postgres (nil: copy them again).
        var tlsGeneration: Int?
        /// The peer addresses pg_hba.conf was last checked against (nil: check it again).
        var admittedPeers: [String]?
        /// The PostgreSQL parameters last written from the log (nil: not yet).
        var appliedParameters: [String: String]?
        /// The latest restart request acted on (`NodeRecord.restartIndex`; nil: none seen yet).
        var handledRestartIndex: UInt64?
        /// The observation (its `lastObservedNanos`) the replication slots were last checked on.
        var slotsCheckedNanos: UInt64?
        /// Primary handovers in the replayed log, for the metrics.
        var handovers = HandoverTracker()
    }

    public init(configuration: NodeManagerConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        postgres = try PostgresNode(configuration.postgresConfiguration())
        wake = WakeSignal(loop: executor.loop)
        leaseWake = WakeSignal(loop: executor.loop)
        client = try WitnessClient(
            endpoints: configuration.witnesses, credentials: configuration.credentials, requestTimeout: .seconds(5), logger: logger,
            group: executor.loop)
        guard configuration.credentials.replicationPassword != nil else {
            throw NodeManagerError(
                "the credentials of \(client.tls.identity) carry no replication password: a node runs with its own node credentials (`pgquorum pki issue node \(configuration.name) --host \(configuration.host)`)")
        }
        let identity = client.tls.identity
        guard identity.role != .node || identity.name == configuration.name else {
            throw NodeManagerError("the credentials are \(identity)'s, but this node is named \(configuration.name)")
        }
        shared.withLock { $0.state = ClusterState(formation: configuration.formation) }
        postgres.onPostmasterExit { [wake, leaseWake] in
            wake.signal()
            leaseWake.signal()
        }
        metrics = ManagerMetrics(factory: metricsEndpoint.factory)
        roleChangeHook = configuration.roleChangeCommand.map { RoleChangeHook(command: $0, timeout: configuration.roleChangeTimeout, logger: logger) }
        watchdog = configuration.watchdogCommand.flatMap { command in
            command.first.map { Watchdog(executable: $0, arguments: Array(command.dropFirst())) }
        }
    }

    var node: PGNodeID { configuration.node }

    /// Runs until `stop()`, or until the node is dropped from the formation (then postgres is
    /// stopped and it returns): observations, heartbeats, lease checks, log following and
    /// actions each in a task of its own.
    /// Throws when the node is not registered at all.
    public func run() async throws {
        if let warning = client.tls.expiryWarning() { logger.error("certificate problem", metadata: ["reason": "\(warning)"]) }
        // Programs of another major version than the data directory's would not start it.
        do { try configuration.installation.checkDataDirectory(configuration.dataDirectory) } catch { throw NodeManagerError("\(error)") }
        try postgres.writeReplicationPassword(configuration.replicationPassword)
        // The CA and this node's certificate, for its replication connections (a clone's
        // first) and for its server.
        let tlsGeneration = client.tls.current().generation
        try postgres.writeTLSFiles()
        shared.withLock { $0.tlsGeneration = tlsGeneration }
        // Settings this version derives (replication timeouts…) reach an existing node too.
        if FileManager.default.fileExists(atPath: configuration.dataDirectory + "/PG_VERSION") { try postgres.writeSettings() }
        let endpoints = await startHTTPEndpoints()
        notify.ready()
        do {
            // Every loop, and every task they start, runs on the manager's event loop.
            try await withTaskExecutorPreference(executor) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { await self.observationLoop() }
                    group.addTask { await self.heartbeatLoop() }
                    group.addTask { await self.leaseLoop() }
                    group.addTask { await self.followLoop() }
                    group.addTask { try await self.controlLoop() }
                    try await group.next()
                    group.cancelAll()
                }
            }
        } catch {
            await endpoints?.close()
            throw error
        }
        await endpoints?.close()
    }

    /// Stops postgres and the loops.
    public func stop() async {
        shared.withLock { $0.stopping = true }
        await postgres.stop(.fast)
        await watchdog?.close()
        client.close()
    }

    var isStopping: Bool { shared.withLock { $0.stopping } }

    /// SIGHUP: postgres re-reads its configuration files; the manager goes on.
    public func reload() async {
        logger.notice("SIGHUP: postgres reloads its configuration files")
        guard postgres.isRunning else { return }
        let postgres = self.postgres
        do {
            try await blocking { try postgres.reload() }
        } catch {
            logger.warning("postgres could not reload its configuration", metadata: ["error": "\(error)"])
        }
    }

    /// The longest the control loop waits for news before it steps again.
    static let stepIdleTimeout: Duration = .milliseconds(500)

    static let writableStates: Set<NodeState> = [.single, .waitPrimary, .primary, .applySettings]
    /// States in which postgres should be running; the manager restarts it when it died.
    static let runningStates: Set<NodeState> = [
        .single, .waitPrimary, .primary, .applySettings, .catchingUp, .secondary, .waitMaintenance, .reportLSN, .fastForward,
    ]

    // MARK: Acting

    /// Steps at once when the follower applied new entries (at least every sequencer tick,
    /// half a second by default) or postgres ended, and at least every `stepIdleTimeout`, on
    /// the state as the follower last left it (`NodeManager+Following`).
    private func controlLoop() async throws {
        var failures = 0
        var unregisteredSince: ContinuousClock.Instant?
        while !Task.isCancelled && !isStopping {
            await wake.wait(timeout: Self.stepIdleTimeout)
            guard shared.withLock({ $0.replayed }) else { continue }
            do {
                switch shared.withLock({ ($0.state[node] != nil, $0.registered) }) {
                case (true, _):
                    unregisteredSince = nil
                case (false, true):
                    // The log removed this node: it was dropped, and stopped postgres on the way.
                    logger.notice("this node was dropped from the formation: the manager ends")
                    await postgres.stop(.fast)
                    return
                case (false, false):
                    // A witness that lags may not have applied the registration yet.
                    let since = unregisteredSince ?? ContinuousClock.now
                    unregisteredSince = since
                    if ContinuousClock.now - since > .seconds(10) {
                        throw NodeNotRegisteredError(node: node, formation: configuration.formation)
                    }
                }
                try await step()
                failures = 0
            } catch let error as NodeNotRegisteredError {
                throw error
            } catch {
                failures += 1
                logger.warning("step failed; retrying", metadata: ["error": "\(error)", "attempt": "\(failures)"])
                try? await Task.sleep(for: .milliseconds(min(100 * failures, 2_000)))
            }
        }
    }

    /// One control step: supervise postgres, or run the action towards the goal.
    func step() async throws {
        let (state, ackedIndex, fenced) = shared.withLock { ($0.state, $0.lastAckedIndex, $0.fenced) }
        guard let me = state[node] else { return }
        // No decision on a view older than our own latest committed report (DESIGN §5):
        // whatever we do next, the log we act on has seen us alive. A manager that just
        // started waits for its first committed report.
        guard ackedIndex > 0, state.appliedIndex >= ackedIndex else { return }
        // pg_hba.conf admits every registered node, on every node (a standby may be the next
        // primary), before any action: a primary that reports a goal reached admits every node
        // registered before that goal was assigned, which is what a new node waits for. A
        // node in maintenance belongs to the operator: left as it is.
        if !(me.reached == .maintenance && me.goal == .maintenance) {
            try await admitPeers(state)
            try await applyParameters(state)
            await maintainSlots(state)
        }
        if me.goal == me.reached {
            try await restartIfAsked(me)
            try await supervise(me, state: state, fenced: fenced)
            return
        }
        let transition = try KeeperTransitions.transition(from: me.reached, to: me.goal)
        logger.info(
            "transition", metadata: ["from": "\(me.reached.rawValue)", "to": "\(me.goal.rawValue)", "action": "\(transition.action.rawValue)"])
        try await perform(transition.action, state: state)
        shared.withLock { $0.admittedPeers = nil }
        // Reports of the state reached carry what postgres is after the action.
        await refreshObservation()
        // An action may have started or promoted postgres (a new postmaster pid): the watchdog
        // is armed for it now, not at the next lease check — a freeze in between would leave
        // a writable postgres with no watchdog (the simulation found it).
        await enforceLease()
        let index = try await client.append(.stateReached(node: node, state: me.goal), formation: configuration.formation)
        shared.withLock { shared in
            shared.fenced = false
            shared.lastAckedIndex = max(shared.lastAckedIndex, index)
        }
        logger.info("reached", metadata: ["state": "\(me.goal.rawValue)", "index": "\(index)"])
        roleChangeHook?.reached(
            me.goal, node: me.registration, timeline: shared.withLock { $0.lastObservation?.timeline } ?? me.timeline,
            formation: configuration.formation)
        // Act next only on a log that shows this state reached (never repeat an action
        // because a lagging witness answered the read): the gate at the top of the step holds
        // until the follower applied `index`; this waits for it, within reason.
        let deadline = ContinuousClock.now + .seconds(5)
        while !isStopping && shared.withLock({ $0.state.appliedIndex < index }) && ContinuousClock.now < deadline {
            await wake.wait(timeout: .milliseconds(100))
        }
        // The report of the state reached (what postgres is after the action: an election
        // waits for the standbys' LSNs) goes now, not at the next heartbeat.
        if shared.withLock({ $0.state.appliedIndex >= index }) { reportNow() }
    }

    /// Restarts postgres once for each restart request the log holds for this standby
    /// (`pgquorum pg restart`). A manager that starts late takes the requests before it as
    /// acted on, unless postgres still waits for a restart (`pending_restart`).
    func restartIfAsked(_ me: NodeRecord) async throws {
        let (handled, pending) = shared.withLock { ($0.handledRestartIndex, !($0.lastObservation?.pendingRestart.isEmpty ?? true)) }
        let asked = handled.map { me.restartIndex > $0 } ?? (me.restartIndex > 0 && pending)
        shared.withLock { $0.handledRestartIndex = me.restartIndex }
        guard asked, !Self.writableStates.contains(me.reached), postgres.isRunning else { return }
        logger.info("restarting postgres, as the operator asked", metadata: ["request": "\(me.restartIndex)"])
        await postgres.stop(.fast)
        try await postgres.start()
        await refreshObservation()
    }

    /// Restarts a postgres that died in a state where it runs; a primary only with a valid lease.
    /// A running primary keeps `synchronous_standby_names` as the log derives it (a standby
    /// that joined, or left through apply_settings).
    func supervise(_ me: NodeRecord, state: ClusterState, fenced: Bool) async throws {
        if [.primary, .applySettings].contains(me.reached), postgres.isRunning,
            let observed = shared.withLock({ $0.lastObservation?.synchronousStandbyNames })
        {
            let wanted = state.synchronousStandbyNames(for: node)
            if observed != wanted {
                logger.info("updating synchronous_standby_names", metadata: ["from": "\(observed)", "to": "\(wanted)"])
                let postgres = self.postgres
                try await blocking { try postgres.setSynchronousStandbyNames(wanted) }
                shared.withLock { $0.lastObservation?.synchronousStandbyNames = wanted }
            }
        }
        if try await recloneIfUpstreamLacksWAL(me, state: state) { return }
        guard Self.runningStates.contains(me.reached), !postgres.isRunning else { return }
        // Writable, or fenced by its lease whatever the log shows (a promotion whose state
        // never committed): started again only with a valid lease.
        if Self.writableStates.contains(me.reached) || fenced {
            let (acked, isFenced) = shared.withLock { ($0.lastAckedSentNanos, $0.fenced) }
            let lease = UInt64(state.settings.primaryLeaseMillis) * 1_000_000
            guard let acked, nowNanos() < acked + lease else { return }
            if isFenced { logger.info("lease renewed: starting postgres again") }
        }
        logger.warning("postgres is not running: starting it", metadata: ["state": "\(me.reached.rawValue)"])
        try await postgres.start()
        if Self.writableStates.contains(me.reached) {
            try await blocking { try self.postgres.setSynchronousStandbyNames(state.synchronousStandbyNames(for: self.node)) }
        }
        shared.withLock { $0.fenced = false }
        await refreshObservation()
        await enforceLease()
    }

    /// A standby whose primary recycled the WAL it still needs can never stream again (WAL is
    /// kept by `wal_keep_size`, not by replication slots): once that has lasted 5 s, with a
    /// healthy primary to copy from, the standby is cloned afresh. True when it was.
    func recloneIfUpstreamLacksWAL(_ me: NodeRecord, state: ClusterState) async throws -> Bool {
        let streaming = shared.withLock { $0.lastObservation?.walReceiver?.status == "streaming" }
        guard [.catchingUp, .secondary].contains(me.reached), postgres.isRunning, !streaming,
            let upstream = state.upstream(of: node), let primary = state.primaryNode, primary.registration == upstream, state.isHealthy(primary),
            let segment = postgres.upstreamLacksWAL()
        else {
            shared.withLock { $0.upstreamLacksWALSince = nil }
            return false
        }
        let now = ContinuousClock.now
        let since = shared.withLock { shared in
            if shared.upstreamLacksWALSince == nil { shared.upstreamLacksWALSince = now }
            return shared.upstreamLacksWALSince!
        }
        guard now - since >= .seconds(5) else { return false }
        logger.error(
            "the primary no longer has WAL this standby needs: cloning it afresh",
            metadata: ["segment": "\(segment)", "primary": "\(upstream.host):\(upstream.port)"])
        try await perform(.initStandby, state: state)
        shared.withLock { $0.admittedPeers = nil }
        shared.withLock { $0.upstreamLacksWALSince = nil }
        return true
    }
}

/// The log does not know this node: nothing to manage until `node create` registers it.
public struct NodeNotRegisteredError: Error, CustomStringConvertible {
    public var node: PGNodeID
    public var formation: String
    public var description: String {
        "node \(node) is not registered in formation \(formation): run `pgquorum node create` for it (again, if it was dropped)"
    }
}

public struct NodeManagerError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
