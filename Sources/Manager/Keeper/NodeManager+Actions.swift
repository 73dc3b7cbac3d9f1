import EventLog
import Foundation
import NodeControl

/// What the manager does to postgres: pg_hba.conf for the registered nodes, and the action of
/// each transition-table row (DESIGN §6).
extension NodeManager {
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
    /// dropped) and reloads a running postgres. This runs before every control step: when the
    /// peers' addresses are those last written, it touches no file (after an action, which
    /// may have cloned or rewound the data directory, the file is checked again).
    func admitPeers(_ state: ClusterState) async throws {
        let postgres = self.postgres
        guard FileManager.default.fileExists(atPath: configuration.dataDirectory + "/PG_VERSION") else {
            shared.withLock { $0.admittedPeers = nil }
            return
        }
        // Names resolve from the address book's cache; a lookup that is due runs off the pool.
        let hosts = state.sortedNodes.map(\.registration.host) + [configuration.host]
        let peers = addressBook.isCurrent(hosts) ? peerAddresses(state) : await blocking { [self] in peerAddresses(state) }
        // A renewed certificate (or CA) reaches postgres as it reaches the witness client.
        let tlsGeneration = client.tls.current().generation
        if shared.withLock({ $0.tlsGeneration }) != tlsGeneration {
            let changed = try await blocking { try postgres.writeTLSFiles() }
            shared.withLock { $0.tlsGeneration = tlsGeneration }
            if changed, postgres.isRunning {
                logger.info("postgres uses the renewed certificate", metadata: ["certificate": "\(configuration.credentials.certificateFile)"])
                try await blocking { try postgres.reload() }
            }
        }
        guard shared.withLock({ $0.admittedPeers }) != peers else { return }
        let changed = try await blocking { try postgres.writeHBA(peers: peers) }
        shared.withLock { $0.admittedPeers = peers }
        guard changed else { return }
        logger.info("pg_hba.conf now admits the registered nodes", metadata: ["addresses": "\(peers.joined(separator: " "))"])
        if postgres.isRunning { try await blocking { try postgres.reload() } }
    }

    /// Writes the PostgreSQL parameters the log sets for this node (`pgquorum pg set`) into
    /// the file postgres includes, and reloads a running postgres when it changed. A clone or
    /// rewind rewrites the file from the same values before postgres starts. Parameters that
    /// need a restart show in the reports (`pendingRestart`) until `pgquorum pg restart`.
    func applyParameters(_ state: ClusterState) async throws {
        var wanted = state.parameters(for: node)
        // The formation's cap on what a replication slot may hold back.
        let keep = state.settings.maxSlotWALKeepSizeMB
        wanted["max_slot_wal_keep_size"] = keep == 0 ? "-1" : "\(keep)MB"
        guard shared.withLock({ $0.appliedParameters }) != wanted else { return }
        let postgres = self.postgres
        let parameters = wanted
        let changed = try await blocking { try postgres.setManagedParameters(parameters) }
        shared.withLock { $0.appliedParameters = wanted }
        guard changed else { return }
        let listed = wanted.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        logger.info("PostgreSQL parameters from the log written", metadata: ["parameters": "\(listed)"])
        guard postgres.isRunning else { return }
        try await blocking { try postgres.reload() }
        // A value the server refuses leaves the setting as it was: say which, loudly.
        for problem in (try? await blocking { try postgres.configurationErrors() }) ?? [] {
            logger.error("postgres refused a configuration line", metadata: ["problem": "\(problem)"])
        }
    }

    /// PostgreSQL's default WAL segment size.
    static let walSegmentBytes: UInt64 = 16 << 20

    /// This node's replication slot on the node it streams from (every node keeps one for
    /// every other node, `maintainSlots`).
    var slot: String { ClusterState.slotName(of: node) }

    /// Keeps a physical replication slot for every other registered node, on every node, as
    /// Patroni's member slots: the primary's hold the WAL each standby still needs (capped by
    /// `max_slot_wal_keep_size`), and a standby's are advanced to where each node's reports
    /// say it is, so that after a failover the new primary already holds the WAL the others
    /// need. Slots of nodes no longer registered go. A failure is logged, never blocking.
    func maintainSlots(_ state: ClusterState) async {
        // Once per observation (every heartbeat): what it shows of the slots is what is acted on.
        let observation = shared.withLock { shared -> PostgresObservation? in
            guard let at = shared.lastObservedNanos, shared.slotsCheckedNanos != at else { return nil }
            shared.slotsCheckedNanos = at
            return shared.lastObservation
        }
        guard postgres.isRunning, let observation else { return }
        let others = state.sortedNodes.filter { $0.id != node && $0.goal != .dropped }
        let wanted = Set(others.map { ClusterState.slotName(of: $0.id) })
        let existing = Dictionary(observation.slots.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        // A slot that lost its WAL (past max_slot_wal_keep_size) holds nothing: made anew, it
        // holds from now on, and its standby finds out it must be cloned again.
        let lost = existing.values.filter { wanted.contains($0.name) && !$0.active && $0.walStatus == "lost" }.map(\.name).sorted()
        let missing = wanted.subtracting(existing.keys).union(lost).sorted()
        let unknown = (existing.keys.filter { !wanted.contains($0) && ClusterState.node(ofApplicationName: $0) != nil } + lost).sorted()
        // On a standby, each slot follows its node's reported position (never backwards).
        let advances: [(String, UInt64)] =
            observation.inRecovery
            ? others.compactMap { other in
                let name = ClusterState.slotName(of: other.id)
                // WAL goes a segment at a time: a slot less than one behind frees nothing.
                guard let slot = existing[name], let restart = slot.restartLSN, !slot.active, other.lsn >= restart + Self.walSegmentBytes
                else { return nil }
                return (name, other.lsn)
            } : []
        guard !missing.isEmpty || !unknown.isEmpty || !advances.isEmpty else { return }
        let postgres = self.postgres
        do {
            try await blocking {
                for name in unknown { try postgres.dropSlot(name) }
                for name in missing { try postgres.createSlot(name) }
                for (name, lsn) in advances { try postgres.advanceSlot(name, to: lsn) }
            }
            if !missing.isEmpty || !unknown.isEmpty {
                logger.info("replication slots for the registered nodes", metadata: ["created": "\(missing)", "dropped": "\(unknown)"])
            }
        } catch {
            logger.warning("replication slots not maintained", metadata: ["error": "\(error)"])
        }
    }

    func source(_ registration: NodeRegistration?) throws -> ReplicationSource {
        guard let registration else { throw NodeManagerError("no upstream node to replicate from") }
        return ReplicationSource(host: registration.host, port: Int(registration.port))
    }

    var dataDirectoryIsEmpty: Bool {
        ((try? FileManager.default.contentsOfDirectory(atPath: configuration.dataDirectory)) ?? []).isEmpty
    }

    /// The action of one transition-table row, against postgres (idempotent: it may run again
    /// after a failure or a restart of the manager).
    func perform(_ action: KeeperAction, state: ClusterState) async throws {
        let node = self.node
        let postgres = self.postgres
        let password = configuration.replicationPassword
        // When this standby stopped following holds only until an action changes postgres.
        if action != .none { shared.withLock { $0.followingEndedNanos = nil } }
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
            if !dataDirectoryIsEmpty {
                // The node's own ALTER SYSTEM settings come back after the clone.
                try await blocking { try postgres.saveOwnSettings() }
                try? FileManager.default.removeItem(atPath: configuration.dataDirectory)
            }
            let logger = self.logger
            try await blocking {
                try postgres.basebackup(from: from, slot: nil) { progress in
                    logger.info("cloning", metadata: ["percent": "\(progress.percent)", "bytes": "\(progress.copiedBytes)"])
                }
                try postgres.configureStandby(upstream: action == .initFromStandby ? nil : from, slot: action == .initFromStandby ? nil : self.slot)
            }
            try await postgres.start()
        case .followNewPrimary:
            let from = try source(state.upstream(of: node) ?? state.primaryNode?.registration)
            try await blocking { try postgres.configureStandby(upstream: from, slot: self.slot) }
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
                try await blocking {
                    try postgres.basebackup(from: from, slot: nil)
                    try postgres.configureStandby(upstream: from, slot: self.slot)
                }
            } else {
                let outcome = try await postgres.rewind(from: from, slot: nil, recloneOnFailure: true)
                logger.info("rejoined the new primary", metadata: ["outcome": "\(outcome)"])
                try await blocking { try postgres.configureStandby(upstream: from, slot: self.slot) }
            }
            try await ensureRunning()
        case .reportLSN, .reportLSNAndDropSlots, .cleanupAsPrimary:
            // Stop following: the LSN we report must not move while the election runs, and
            // the old primary's lease exception counts on this standby no longer replying.
            try await blocking { try postgres.configureStandby(upstream: nil, slot: nil) }
            if postgres.isRunning { try await blocking { try postgres.reload() } } else { try await postgres.start() }
            try await waitForWALReceiverToStop()
            // With primary_conninfo cleared no receiver starts again: the watch's run, which
            // its last observation (no receiver) extended, says when following ended.
            shared.withLock { $0.followingEndedNanos = $0.receiverWatch.downSinceNanos }
        case .fastForward:
            let from = try source(state.fastForwardSource?.registration)
            let target = state.fastForwardSource?.lsn ?? 0
            try await blocking { try postgres.configureStandby(upstream: from, slot: self.slot) }
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
            let started = nowNanos()
            let observation = try await blocking { try postgres.observe() }
            record(observation, startedNanos: started)
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
        let k = state.standbysToHoldWrites
        let listed = Set(state.quorumStandbys(excluding: node).map { ClusterState.applicationName(of: $0.id) })
        guard k > 0, !listed.isEmpty else { return }
        let postgres = self.postgres
        let target = try await blocking { try postgres.observe().currentLSN }
        let deadline = ContinuousClock.now + .seconds(30)
        var holding = 0
        while true {
            let peers = try await blocking { try postgres.replicationStatus().peers }
            let quorum = LeaseRules.quorumHolds(peers, listed: listed, k: k, target: target)
            holding = quorum.holding
            if quorum.holds { return }
            guard ContinuousClock.now < deadline, !isStopping else {
                throw NodeManagerError(
                    "synchronous replication: \(holding) of the \(k) quorum standbys needed flushed past \(LSNFormat.format(target)) within 30 s")
            }
            // The log may have moved on meanwhile (the standbys stopped streaming: wait_primary);
            // the follower keeps the replayed state current.
            let goal = shared.withLock { $0.state[node]?.goal }
            if goal != .primary { throw NodeManagerError("the goal changed to \(goal?.rawValue ?? "none") while waiting for the standbys") }
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

    func ensureRunning() async throws {
        if !postgres.isRunning { try await postgres.start() }
    }
}
