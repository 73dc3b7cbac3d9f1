import EventLog
import Foundation
import Logging
import NodeControl
import Synchronization

/// Everything one node manager needs to know (DESIGN §1): its node, its postgres, the
/// witnesses.
public struct NodeManagerConfiguration: Sendable {
    public var node: PGNodeID
    public var name: String
    /// The address peers and clients use for this postgres.
    public var host: String
    public var port: Int
    /// PGDATA and a private run folder (socket, log, password file).
    public var dataDirectory: String
    public var runDirectory: String
    public var formation: String = EventRecord.defaultFormation
    public var candidatePriority: UInt8 = 50
    public var replicationQuorum = true
    public var witnesses: [WitnessEndpoint]
    public var credentials: WitnessCredentials
    /// Extra postgres settings (tests turn fsync off).
    public var postgresSettings: [String: String] = [:]
    /// Where clients may connect from, and how they authenticate (pg_hba.conf).
    public var clientNetworks: [String] = []
    public var clientAuthMethod = "scram-sha-256"
    /// The command that runs the watchdog process (`pgquorum node watchdog`); nil runs none.
    public var watchdogCommand: [String]?

    public init(
        node: PGNodeID, name: String, host: String, port: Int, dataDirectory: String, runDirectory: String, witnesses: [WitnessEndpoint],
        credentials: WitnessCredentials
    ) {
        self.node = node
        self.name = name
        self.host = host
        self.port = port
        self.dataDirectory = dataDirectory
        self.runDirectory = runDirectory
        self.witnesses = witnesses
        self.credentials = credentials
    }

    public var registration: NodeRegistration {
        NodeRegistration(
            node: node, name: name, host: host, port: UInt16(port), systemIdentifier: 0, candidatePriority: candidatePriority,
            replicationQuorum: replicationQuorum)
    }

    /// The password of the replication role, the same on every node: derived from the
    /// cluster secret, so there is nothing more to distribute.
    public var replicationPassword: String {
        WitnessCredentials.hex(SHA256.hmac(key: credentials.secret, message: Array("pgquorum replication password".utf8)))
    }

    public func postgresConfiguration() -> PostgresNodeConfiguration {
        var configuration = PostgresNodeConfiguration(
            dataDirectory: dataDirectory, runDirectory: runDirectory, port: port, applicationName: ClusterState.applicationName(of: node))
        configuration.listenAddress = host
        configuration.extraSettings = postgresSettings
        configuration.clientNetworks = clientNetworks
        configuration.clientAuthMethod = clientAuthMethod
        configuration.peerConnectTimeoutSeconds = 2
        // A replication link cut silently ends within a few leases; the lease check itself
        // reads reply times and does not wait for it.
        let lease = Duration.milliseconds(FormationSettings().primaryLeaseMillis)
        configuration.replicationTimeout = max(.seconds(3), lease * 2)
        return configuration
    }
}

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

    struct Shared {
        /// The state replayed from the log, as far as this manager read it.
        var state = ClusterState()
        /// The send time (this process's monotonic clock) of the last report whose entry
        /// committed, and that entry's index: the lease runs from the former (DESIGN §5).
        var lastAckedSentNanos: UInt64?
        var lastAckedIndex: UInt64 = 0
        /// Postgres was stopped because the lease ran out.
        var fenced = false
        var lastObservation: PostgresObservation?
        /// When the query behind `lastObservation` started (this process's monotonic clock).
        var lastObservedNanos: UInt64?
        var stopping = false
        /// Since when the upstream has been found to lack WAL this standby needs.
        var upstreamLacksWALSince: ContinuousClock.Instant?
        /// Whether the replayed log has shown this node registered.
        var registered = false
        /// Node hosts that did not resolve at the last pg_hba.conf check (warned about once).
        var unresolvedHosts: Set<String> = []
    }

    public init(configuration: NodeManagerConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        postgres = try PostgresNode(configuration.postgresConfiguration())
        client = WitnessClient(
            endpoints: configuration.witnesses, credentials: configuration.credentials, requestTimeout: .seconds(5), logger: logger)
        shared.withLock { $0.state = ClusterState(formation: configuration.formation) }
        watchdog = configuration.watchdogCommand.flatMap { command in
            command.first.map { Watchdog(executable: $0, arguments: Array(command.dropFirst())) }
        }
    }

    var node: PGNodeID { configuration.node }

    /// Runs until `stop()`, or until the node is dropped from the formation (then postgres is
    /// stopped and it returns): heartbeats in one task, log following and actions in another.
    /// Throws when the node is not registered at all.
    public func run() async throws {
        try postgres.writeReplicationPassword(configuration.replicationPassword)
        // Settings this version derives (replication timeouts…) reach an existing node too.
        if FileManager.default.fileExists(atPath: configuration.dataDirectory + "/PG_VERSION") { try postgres.writeSettings() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await self.observationLoop() }
            group.addTask { await self.heartbeatLoop() }
            group.addTask { await self.leaseLoop() }
            group.addTask { try await self.controlLoop() }
            try await group.next()
            group.cancelAll()
        }
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

    static let writableStates: Set<NodeState> = [.single, .waitPrimary, .primary, .applySettings]
    /// States in which postgres should be running; the manager restarts it when it died.
    static let runningStates: Set<NodeState> = [
        .single, .waitPrimary, .primary, .applySettings, .catchingUp, .secondary, .waitMaintenance, .reportLSN, .fastForward,
    ]

    // MARK: Following the log and acting

    private func controlLoop() async throws {
        var failures = 0
        var unregisteredSince: ContinuousClock.Instant?
        while !Task.isCancelled && !isStopping {
            do {
                try await refresh()
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
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Replays the committed entries this manager has not seen yet.
    func refresh() async throws {
        var state = shared.withLock { $0.state }
        // The first replay goes through the whole history: its goals are not news.
        let firstReplay = state.appliedIndex == 0
        try await ClusterLog.replay(from: client, into: &state) { step in
            guard !firstReplay else { return }
            for change in step.changes where change.node == self.node {
                self.logger.info("new goal", metadata: ["goal": "\(change.to.rawValue)", "reason": "\(change.reason)"])
            }
        }
        if firstReplay, state.appliedIndex > 0 {
            let me = state[node]
            logger.info(
                "read the formation's log",
                metadata: [
                    "index": "\(state.appliedIndex)", "reached": "\(me?.reached.rawValue ?? "-")", "goal": "\(me?.goal.rawValue ?? "not registered")",
                ])
        }
        shared.withLock { shared in
            shared.state = state
            if state[node] != nil { shared.registered = true }
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
        if !(me.reached == .maintenance && me.goal == .maintenance) { try await admitPeers(state) }
        if me.goal == me.reached {
            try await supervise(me, state: state, fenced: fenced)
            return
        }
        let transition = try KeeperTransitions.transition(from: me.reached, to: me.goal)
        logger.info(
            "transition", metadata: ["from": "\(me.reached.rawValue)", "to": "\(me.goal.rawValue)", "action": "\(transition.action.rawValue)"])
        try await perform(transition.action, state: state)
        // Reports of the state reached carry what postgres is after the action.
        await refreshObservation()
        let index = try await client.append(.stateReached(node: node, state: me.goal), formation: configuration.formation)
        shared.withLock { shared in
            shared.fenced = false
            shared.lastAckedIndex = max(shared.lastAckedIndex, index)
        }
        logger.info("reached", metadata: ["state": "\(me.goal.rawValue)", "index": "\(index)"])
        // Act next only on a log that shows this state reached (never repeat an action
        // because a lagging witness answered the read).
        while !isStopping {
            try await refresh()
            if shared.withLock({ $0.state.appliedIndex >= index }) { break }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The pg_hba.conf address fields of every registered node's host and our own.
    func peerAddresses(_ state: ClusterState) -> [String] {
        let hosts = state.sortedNodes.map(\.registration.host) + [configuration.host]
        let lookup = addressBook.lookup(hosts)
        let known = shared.withLock { shared in
            defer { shared.unresolvedHosts = Set(lookup.unresolved.keys) }
            return shared.unresolvedHosts
        }
        for (host, reason) in lookup.unresolved.sorted(by: { $0.key < $1.key }) where !known.contains(host) {
            logger.warning("a node's host does not resolve: pg_hba.conf does not admit it yet", metadata: ["host": "\(host)", "error": "\(reason)"])
        }
        return lookup.cidrs
    }

    /// Rewrites pg_hba.conf when the registered nodes changed (a node joined, moved or was
    /// dropped) and reloads a running postgres.
    private func admitPeers(_ state: ClusterState) async throws {
        let postgres = self.postgres
        guard FileManager.default.fileExists(atPath: configuration.dataDirectory + "/PG_VERSION") else { return }
        let changed = try await blocking { [self] in
            let peers = peerAddresses(state)
            return (try postgres.writeHBA(peers: peers), peers)
        }
        guard changed.0 else { return }
        logger.info("pg_hba.conf now admits the registered nodes", metadata: ["addresses": "\(changed.1.joined(separator: " "))"])
        if postgres.isRunning { try await blocking { try postgres.reload() } }
    }

    /// Restarts a postgres that died in a state where it runs; a primary only with a valid lease.
    /// A running primary keeps `synchronous_standby_names` as the log derives it (a standby
    /// that joined, or left through apply_settings).
    private func supervise(_ me: NodeRecord, state: ClusterState, fenced: Bool) async throws {
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
    }

    private func source(_ registration: NodeRegistration?) throws -> ReplicationSource {
        guard let registration else { throw NodeManagerError("no upstream node to replicate from") }
        return ReplicationSource(host: registration.host, port: Int(registration.port))
    }

    private var dataDirectoryIsEmpty: Bool {
        ((try? FileManager.default.contentsOfDirectory(atPath: configuration.dataDirectory)) ?? []).isEmpty
    }

    /// A standby whose primary recycled the WAL it still needs can never stream again (WAL is
    /// kept by `wal_keep_size`, not by replication slots): once that has lasted 5 s, with a
    /// healthy primary to copy from, the standby is cloned afresh. True when it was.
    private func recloneIfUpstreamLacksWAL(_ me: NodeRecord, state: ClusterState) async throws -> Bool {
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
        shared.withLock { $0.upstreamLacksWALSince = nil }
        return true
    }

    /// The action of one transition-table row, against postgres (idempotent: it may run again
    /// after a failure or a restart of the manager).
    func perform(_ action: KeeperAction, state: ClusterState) async throws {
        let node = self.node
        let postgres = self.postgres
        let password = configuration.replicationPassword
        switch action {
        case .none, .startMaintenance, .prepareForSecondary:
            break
        case .initPrimary:
            if dataDirectoryIsEmpty {
                let peers = peerAddresses(state)
                try await blocking { try postgres.initialize(peers: peers) }
            }
            try await blocking { try postgres.clearStandbySettings() }
            if !postgres.isRunning { try await postgres.start() }
            try await blocking {
                try postgres.createReplicationRole(password: password)
                try postgres.setSynchronousStandbyNames("")
                try postgres.setReadOnly(false)
            }
        case .initStandby, .initFromStandby:
            let upstream = action == .initStandby ? state.upstream(of: node) : state.fastForwardSource?.registration
            let from = try source(upstream ?? state.primaryNode?.registration)
            await postgres.stop(.fast)
            if !dataDirectoryIsEmpty { try? FileManager.default.removeItem(atPath: configuration.dataDirectory) }
            let logger = self.logger
            try await blocking {
                try postgres.basebackup(from: from, slot: nil) { progress in
                    logger.info("cloning", metadata: ["percent": "\(progress.percent)", "bytes": "\(progress.copiedBytes)"])
                }
                if action == .initFromStandby { try postgres.configureStandby(upstream: nil, slot: nil) }
            }
            try await postgres.start()
        case .followNewPrimary:
            let from = try source(state.upstream(of: node) ?? state.primaryNode?.registration)
            try await blocking { try postgres.configureStandby(upstream: from, slot: nil) }
            if postgres.isRunning { try await blocking { try postgres.reload() } } else { try await postgres.start() }
        case .disableSyncReplication, .disableReplication:
            try await ensureRunning()
            try await blocking { try postgres.setSynchronousStandbyNames("") }
        case .enableSyncReplication:
            try await ensureRunning()
            let names = state.synchronousStandbyNames(for: node)
            try await blocking { try postgres.setSynchronousStandbyNames(names) }
            try await waitForQuorumStandbys(state)
        case .stopPostgres, .dropNode:
            await postgres.stop(.fast)
        case .startPostgres:
            try await ensureRunning()
            let names = state.synchronousStandbyNames(for: node)
            try await blocking { try postgres.setSynchronousStandbyNames(names) }
        case .resumeAsPrimary:
            try await blocking { try postgres.clearStandbySettings() }
            try await ensureRunning()
            try await blocking {
                try postgres.setSynchronousStandbyNames("")
                try postgres.setReadOnly(false)
            }
        case .rewindOrReinitialize, .restartStandby:
            let from = try source(state.upstream(of: node) ?? state.primaryNode?.registration)
            if dataDirectoryIsEmpty {
                try await blocking { try postgres.basebackup(from: from, slot: nil) }
            } else {
                let outcome = try await postgres.rewind(from: from, slot: nil, recloneOnFailure: true)
                logger.info("rejoined the new primary", metadata: ["outcome": "\(outcome)"])
                try await blocking { try postgres.configureStandby(upstream: from, slot: nil) }
            }
            try await ensureRunning()
        case .reportLSN, .reportLSNAndDropSlots, .cleanupAsPrimary:
            // Stop following: the LSN we report must not move while the election runs, and
            // the old primary's lease exception counts on this standby no longer replying.
            try await blocking { try postgres.configureStandby(upstream: nil, slot: nil) }
            if postgres.isRunning { try await blocking { try postgres.reload() } } else { try await postgres.start() }
            try await waitForWALReceiverToStop()
        case .fastForward:
            let from = try source(state.fastForwardSource?.registration)
            let target = state.fastForwardSource?.lsn ?? 0
            try await blocking { try postgres.configureStandby(upstream: from, slot: nil) }
            try await ensureRunning()
            try await blocking { try postgres.reload() }
            // Never report fast_forward reached short of the target: the reducer promotes on
            // it, and the WAL still missing may hold acknowledged writes. The step fails and
            // runs again instead.
            let deadline = ContinuousClock.now + .seconds(60)
            var replayed: LSN = 0
            while true {
                if let observed = try? postgres.observe() { replayed = observed.replayLSN }
                if replayed >= target { break }
                guard ContinuousClock.now < deadline else {
                    throw NodeManagerError(
                        "fast-forward replayed only up to \(LSNFormat.format(replayed)) of \(LSNFormat.format(target)) from \(from) within 60 s")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            try await blocking { try postgres.configureStandby(upstream: nil, slot: nil) }
            try await blocking { try postgres.reload() }
        case .stopReplicationAndPromote:
            try await ensureRunning()
            try await blocking {
                try postgres.setReadOnly(true)
                try Self.promoteAndCheckpoint(postgres)
                try postgres.clearStandbySettings()
                try postgres.setSynchronousStandbyNames("")
            }
        case .openForWrites:
            try await ensureRunning()
            try await blocking { try postgres.setReadOnly(false) }
        case .promoteStandby:
            try await ensureRunning()
            try await blocking {
                try Self.promoteAndCheckpoint(postgres)
                try postgres.clearStandbySettings()
                try postgres.setSynchronousStandbyNames("")
                try postgres.setReadOnly(false)
            }
        case .checkpointAndStop, .stopForPrimaryMaintenance:
            if postgres.isRunning { try? await blocking { try postgres.checkpoint() } }
            await postgres.stop(.fast)
            if action == .checkpointAndStop { try await blocking { try postgres.configureStandby(upstream: nil, slot: nil) } }
        case .stopAndSetUpStandby:
            await postgres.stop(.fast)
            try await blocking { try postgres.configureStandby(upstream: nil, slot: nil) }
        }
    }

    /// Done once a standby's WAL receiver has stopped (after `primary_conninfo` was cleared):
    /// only then is the LSN it reports final. Gives up after 10 s (the step runs again).
    func waitForWALReceiverToStop() async throws {
        let postgres = self.postgres
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            let observation = try await blocking { try postgres.observe() }
            guard observation.inRecovery, let receiver = observation.walReceiver else { return }
            guard ContinuousClock.now < deadline, !isStopping else {
                throw NodeManagerError("the WAL receiver is still \(receiver.status) 10 s after replication was turned off")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// After `synchronous_standby_names` changed (a quorum standby joined or left): done only
    /// once k of the listed standbys have flushed past the primary's position at the change.
    /// A standby that left may have been the only one holding the latest acknowledged writes;
    /// until the others hold them, the primary stays in apply_settings, where no automatic
    /// failover starts (pg_auto_failover's fsm_enable_sync_rep does the same). Gives up after
    /// 30 s (the step runs again, with the position then).
    func waitForQuorumStandbys(_ state: ClusterState) async throws {
        let k = Int(state.settings.numberSyncStandbys)
        let listed = Set(state.quorumStandbys(excluding: node).map { ClusterState.applicationName(of: $0.id) })
        guard k > 0, !listed.isEmpty else { return }
        let postgres = self.postgres
        let target = try await blocking { try postgres.observe().currentLSN }
        let deadline = ContinuousClock.now + .seconds(30)
        var holding = 0
        while true {
            let peers = try await blocking { try postgres.replicationStatus().peers }
            holding = peers.filter { listed.contains($0.applicationName) && ($0.flushLSN ?? 0) >= target }.count
            if holding >= k { return }
            guard ContinuousClock.now < deadline, !isStopping else {
                throw NodeManagerError(
                    "synchronous replication: \(holding) of the \(k) quorum standbys needed flushed past \(LSNFormat.format(target)) within 30 s")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Promotes (unless already done), then checkpoints: until the end-of-recovery checkpoint,
    /// the control file still names the old timeline, and pg_rewind reading it on the other
    /// side would find "no rewind required" for an old primary that did diverge.
    static func promoteAndCheckpoint(_ postgres: PostgresNode) throws {
        if try postgres.observe().inRecovery { try postgres.promote() }
        try postgres.checkpoint()
    }

    private func ensureRunning() async throws {
        if !postgres.isRunning { try await postgres.start() }
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

/// Runs blocking work (libpq, child programs) on a thread of its own, off the cooperative pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}
