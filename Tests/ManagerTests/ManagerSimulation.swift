import EventLog
import Foundation
import NodeControl
import Raft

@testable import Manager

/// A simulated PostgreSQL server: what the manager's actions change and what clients see.
struct SimulatedPostgres: Equatable {
    var running = false
    /// `standby.signal`: a start begins in recovery.
    var standbySignal = false
    var inRecovery = false
    /// `default_transaction_read_only`.
    var readOnly = false
    /// The end of its WAL in MB, along one history (a rewind cuts back to the shared part).
    var position: UInt64 = 0
    var timeline: UInt32 = 1
    /// `primary_conninfo`: the node it streams from.
    var upstream: PGNodeID?
    /// `synchronous_standby_names` as applied: `ANY k (listed)`.
    var k = 0
    var listed: Set<PGNodeID> = []

    /// Whether a client's write commits here (it may still wait for synchronous standbys).
    var writable: Bool { running && !inRecovery && !readOnly }

    mutating func start() {
        guard !running else { return }
        running = true
        inRecovery = standbySignal
    }

    mutating func promote() {
        guard running, inRecovery else { return }
        inRecovery = false
        standbySignal = false
        timeline += 1
    }

    /// Applies `synchronous_standby_names` as the manager derives it from the log.
    mutating func apply(synchronousStandbyNames names: String) {
        guard names.hasPrefix("ANY "), let open = names.firstIndex(of: "("), let close = names.lastIndex(of: ")") else {
            (k, listed) = (0, [])
            return
        }
        k = Int(names.dropFirst(4).prefix { $0 != " " }) ?? 0
        listed = Set(names[names.index(after: open)..<close].split(separator: ",").compactMap {
            ClusterState.node(ofApplicationName: $0.trimmingCharacters(in: .whitespaces))
        })
    }
}

/// A simulated node manager, as `NodeManager` is: it reports every heartbeat, checks its lease
/// every 100 ms and arms a watchdog, runs the transition table's action towards its goal and
/// supervises postgres when there. It can be cut off from the witnesses (it runs, nothing of
/// it commits) or frozen (nothing of it runs; its watchdog still fires).
struct SimulatedManager {
    enum Mode: String {
        case up
        case cutOff = "cut off from the witnesses"
        case frozen
    }

    var mode = Mode.up
    /// Send time of the last report the witnesses committed (the lease runs from it).
    var lastAckedSentNanos: UInt64?
    /// Postgres stopped by the lease; started again only with a renewed lease.
    var fenced = false
    /// When the watchdog kills postgres unless renewed.
    var watchdogDeadline: UInt64?
    /// An unfinished quorum wait: the goal it serves and the position it waits for.
    var quorumWait: (goal: NodeState, targetMB: UInt64)?
    /// The log as the manager last read it: a cut-off manager decides on an old one, and a
    /// running one on what its stream delivered, which may lag the commit by a few entries.
    var state = ClusterState()
    /// The index of the entry that holds its last acknowledged report: as `NodeManager.step`,
    /// it acts only on a view that holds it.
    var ackedIndex: UInt64 = 0
    /// Its watch of its postgres's WAL receiver, observed every heartbeat and in report_lsn's
    /// action, as `NodeManager` does.
    var receiverWatch = ReceiverWatch()
    /// When it stopped following (set by report_lsn's action, cleared by the next action).
    var followingEndedNanos: UInt64?
    /// Its observations of postgres hang (a slow postgres) until this tick.
    var observationsStalledUntilTick = 0
}

/// One direction of a replication connection: `standby` streams from `upstream`.
struct ReplicationLink: Hashable, Comparable {
    var upstream: PGNodeID
    var standby: PGNodeID

    static func < (a: Self, b: Self) -> Bool { (a.upstream, a.standby) < (b.upstream, b.standby) }
}

/// A walsender on the upstream's side: it outlives a silently cut link until
/// `wal_sender_timeout`, and its reply time ages meanwhile.
struct WALSender {
    var lastReplyNanos: UInt64
    /// When the standby connected (`backend_start`).
    var connectedNanos: UInt64
}

/// Seeded random runs of a formation: the real reducer over a simulated log, simulated node
/// managers that decide through the manager's own rules (`KeeperTransitions`, `LeaseRules`,
/// `StandbyView.primaryView`) on simulated postgres servers that stream WAL over links that
/// can be cut, and a client writing to whichever postgres takes writes, acknowledged by the
/// standbys that postgres actually lists. Time moves in 100 ms ticks.
struct ReducerSimulation {
    struct Failure: Error, CustomStringConvertible {
        var seed: UInt64
        var tick: Int
        var message: String
        var description: String { "seed \(seed), tick \(tick): \(message)" }
    }

    static let tickNanos: UInt64 = 100_000_000
    static let heartbeatTicks = 5
    static let graceNanos = UInt64(FormationSettings.watchdogGraceMillis) * 1_000_000
    static let statusIntervalNanos: UInt64 = 1_000_000_000
    /// `wal_sender_timeout`, as the manager writes it at start.
    static let walSenderTimeoutNanos = UInt64(
        LeaseRules.replicationTimeout(leaseMillis: FormationSettings().primaryLeaseMillis).components.seconds) * 1_000_000_000

    let seed: UInt64
    var rng: SeededGenerator
    /// The production defaults, with reports every 500 ms of log time (`StoryRunner`).
    var runner = StoryRunner(settings: FormationSettings())
    var tick = 0
    /// True time (every manager's monotonic clock); the log's clock restarts at each term.
    var now: UInt64 = 0
    var postgres: [PGNodeID: SimulatedPostgres] = [:]
    var managers: [PGNodeID: SimulatedManager] = [:]
    var senders: [ReplicationLink: WALSender] = [:]
    /// What each standby flushed of its upstream's WAL, in MB: a commit is acknowledged once
    /// k of the standbys the primary lists hold it.
    var flushed: [ReplicationLink: UInt64] = [:]
    /// Host pairs whose network link is down (both directions), as (lower id, higher id).
    var cutLinks: Set<ReplicationLink> = []
    /// The highest position a client was told is committed under synchronous replication.
    var acknowledgedMB: UInt64 = 0
    var nextNode: PGNodeID = 1
    var statistics: [String: Int] = [:]
    var recent: [String] = []
    /// Nodes whose lease a promotion found over; they stay so until a writable goal.
    var leaseOver: Set<PGNodeID> = []
    var writableLastTick: Set<PGNodeID> = []
    /// A witness leader election in progress: nothing commits until this tick, then a new
    /// term starts (a leader change takes the log away for a while, as on a real network).
    var electionUntilTick: Int?
    /// Cut links healed for a moment: at the tick given they are cut again, with resets seen
    /// on both sides or on the standby's only (a flapping link, a middlebox that resets).
    var flappingLinks: [ReplicationLink: Int] = [:]
    /// Connections whose standby side saw a reset while the walsender lives on, its last
    /// reply aging (a reset that reached one side only).
    var standbySideResets: Set<ReplicationLink> = []

    /// How a link is cut.
    enum Cut: CaseIterable {
        /// Connections live on until their timeouts.
        case silent
        /// Both sides see a reset at once (a firewall that rejects).
        case resets
        /// Only the standby sees a reset; the walsender lives on until its timeout.
        case standbySideReset
    }

    /// Operators change nodes' candidate priority and replication quorum
    /// (`pgquorum node set`), drawn from a generator of their own so that the other faults
    /// each seed draws stay as they are without them.
    var nodeSettings: SeededGenerator?

    init(seed: UInt64, nodeSettings: Bool = false) {
        self.seed = seed
        rng = SeededGenerator(seed: seed)
        self.nodeSettings = nodeSettings ? SeededGenerator(seed: seed ^ 0x6e6f_6465_7365_7473) : nil
    }

    mutating func roll(_ perMille: UInt64) -> Bool { rng.next() % 1000 < perMille }

    mutating func pick<T>(_ items: [T]) -> T? { items.isEmpty ? nil : items[Int(rng.next() % UInt64(items.count))] }

    func failure(_ message: String) -> Failure {
        let status = runner.statusLines().joined(separator: "\n")
        let servers = postgres.keys.sorted().map { id -> String in
            let p = postgres[id]!
            let m = managers[id]!
            return "  pg \(id): \(p.running ? (p.writable ? "writable" : p.inRecovery ? "standby" : "read-only") : "stopped") at \(p.position) MB tl \(p.timeline)"
                + " upstream \(p.upstream.map(String.init) ?? "-") ANY \(p.k) \(p.listed.sorted()); manager \(m.mode.rawValue)\(m.fenced ? ", fenced" : "")"
        }.joined(separator: "\n")
        let settings = runner.state.settings
        return Failure(
            seed: seed, tick: tick,
            message: "\(message)\n\(status)\n\(servers)\nacknowledged \(acknowledgedMB) MB; k=\(settings.numberSyncStandbys) strict=\(settings.strictSyncMode) "
                + "lease=\(settings.primaryLeaseMillis)ms unhealthy=\(settings.nodeUnhealthyTimeoutMillis)ms; cut links \(cutLinks.sorted().map { "\($0.upstream)-\($0.standby)" })"
                + "\nrecent:\n\(recent.suffix(Int(ProcessInfo.processInfo.environment["REDUCER_SIMULATION_HISTORY"] ?? "60") ?? 60).joined(separator: "\n"))")
    }

    mutating func note(_ line: String) { recent.append("tick \(tick): \(line)") }

    mutating func run(ticks: Int) throws {
        for _ in 0..<(2 + Int(rng.next() % 3)) { try register() }
        for _ in 0..<ticks {
            tick += 1
            now += Self.tickNanos
            runner.clockNanos += Self.tickNanos
            if let until = electionUntilTick {
                // No entry commits: no reports acknowledged, no actions, no requests.
                endFlaps()
                replicate()
                write()
                checkLeases()
                fireWatchdogs()
                if tick % Self.heartbeatTicks == 0 { observeReceivers() }
                try checkWritable()
                if tick >= until {
                    electionUntilTick = nil
                    try startTerm()
                }
                continue
            }
            try perturb()
            endFlaps()
            replicate()
            write()
            checkLeases()
            fireWatchdogs()
            if tick % Self.heartbeatTicks == 0 {
                observeReceivers()
                try heartbeat()
            }
            try act()
            try checkWritable()
        }
        try checkSnapshotReplay()
    }

    // MARK: The network and replication

    func connected(_ a: PGNodeID, _ b: PGNodeID) -> Bool {
        !cutLinks.contains(ReplicationLink(upstream: min(a, b), standby: max(a, b)))
    }

    /// Standbys stream from their upstream over a working link; a walsender ends at once when
    /// its standby closes the connection over a working link, and only after
    /// `wal_sender_timeout` when the link is silently cut.
    mutating func replicate() {
        for id in postgres.keys.sorted() {
            let standby = postgres[id]!
            guard standby.running, standby.inRecovery, let upstream = standby.upstream, upstream != id,
                let source = postgres[upstream], source.running, connected(id, upstream)
            else { continue }
            let link = ReplicationLink(upstream: upstream, standby: id)
            var received = false
            if roll(700) {
                received = postgres[id]!.position < source.position
                postgres[id]!.position = max(standby.position, source.position)
                postgres[id]!.timeline = source.timeline
            }
            flushed[link] = min(postgres[id]!.position, source.position)
            // A standby replies when WAL arrives, and otherwise every
            // `wal_receiver_status_interval` (1 s).
            if received || standbySideResets.contains(link) || senders[link].map({ now - $0.lastReplyNanos >= Self.statusIntervalNanos }) ?? true {
                // After a reset on its side the standby connects anew.
                let connectedNanos = standbySideResets.remove(link) == nil ? senders[link]?.connectedNanos ?? now : now
                senders[link] = WALSender(lastReplyNanos: now, connectedNanos: connectedNanos)
            }
        }
        for link in senders.keys.sorted() {
            let standby = postgres[link.standby]
            let following = standby.map { $0.running && $0.inRecovery && $0.upstream == link.upstream } ?? false
            if !(postgres[link.upstream]?.running ?? false) || (connected(link.upstream, link.standby) && !following)
                || now - senders[link]!.lastReplyNanos >= Self.walSenderTimeoutNanos
            {
                senders[link] = nil
            }
        }
        standbySideResets = standbySideResets.filter { senders[$0] != nil }
    }

    /// Whether `node`'s WAL receiver runs: its postgres, a standby, follows an upstream that
    /// runs over a working link, or whose walsender still lives (a silently cut link ends on
    /// both sides only after the timeouts) unless a reset reached the standby's side.
    func receiverRuns(_ node: PGNodeID) -> Bool {
        guard let server = postgres[node], server.running, server.inRecovery, let upstream = server.upstream, upstream != node else { return false }
        let link = ReplicationLink(upstream: upstream, standby: node)
        return (senders[link] != nil && !standbySideResets.contains(link))
            || (postgres[upstream]?.running == true && connected(node, upstream))
    }

    /// Every manager that is not frozen observes its postgres (`NodeManager.observationLoop`).
    mutating func observeReceivers() {
        for id in managers.keys.sorted() where managers[id]!.mode != .frozen && tick >= managers[id]!.observationsStalledUntilTick {
            observeReceiver(id)
        }
    }

    mutating func observeReceiver(_ id: PGNodeID) {
        guard postgres[id]!.running else {
            managers[id]!.receiverWatch.unknown()
            return
        }
        managers[id]!.receiverWatch.observed(
            standbyWithoutReceiver: postgres[id]!.inRecovery && !receiverRuns(id), startedNanos: now, finishedNanos: now)
    }

    /// Ends the moments of flapping links that are over: cut again, with resets on both
    /// sides or on the standby's only.
    mutating func endFlaps() {
        for pair in flappingLinks.keys.sorted() where flappingLinks[pair]! <= tick {
            flappingLinks[pair] = nil
            let how: Cut = rng.next() % 2 == 0 ? .resets : .standbySideReset
            cut(pair, how)
            note("link \(pair.upstream)-\(pair.standby) cut again with \(how == .resets ? "resets" : "a reset on the standby's side")")
        }
    }

    /// Cuts the link between a pair of hosts: silently (connections live on until their
    /// timeouts), with resets that end them on both sides at once (a firewall rejecting), or
    /// with a reset only the standby sees (its walsender lives on, its last reply aging).
    mutating func cut(_ pair: ReplicationLink, _ how: Cut) {
        cutLinks.insert(pair)
        for link in senders.keys.sorted() where (min(link.upstream, link.standby), max(link.upstream, link.standby)) == (pair.upstream, pair.standby) {
            switch how {
            case .silent: break
            case .resets: senders[link] = nil
            case .standbySideReset: standbySideResets.insert(link)
            }
        }
    }

    /// `pg_stat_replication` on `node`.
    func peers(of node: PGNodeID) -> [ReplicationPeer] {
        let server = postgres[node]!
        return senders.keys.sorted().filter { $0.upstream == node }.map { link in
            ReplicationPeer(
                applicationName: ClusterState.applicationName(of: link.standby), state: "streaming",
                syncState: server.k >= 1 && server.listed.contains(link.standby) ? "quorum" : "async",
                flushLSN: (flushed[link] ?? 0) << 20, replyAgeMillis: (now - senders[link]!.lastReplyNanos) / 1_000_000,
                connectedMillis: (now - senders[link]!.connectedNanos) / 1_000_000)
        }
    }

    /// A client writes to every postgres that takes writes; a commit on one with `ANY k` is
    /// acknowledged once k of the standbys it lists flushed it. Without synchronous
    /// replication (k = 0, wait_primary, single) a commit is acknowledged alone: asynchronous by
    /// the operator's choice, outside DESIGN §5 rule 3.
    mutating func write() {
        for id in postgres.keys.sorted() where postgres[id]!.writable {
            postgres[id]!.position += 1 + rng.next() % 3
            let server = postgres[id]!
            guard server.k >= 1 else { continue }
            let holds = server.listed.map { flushed[ReplicationLink(upstream: id, standby: $0)] ?? 0 }.sorted(by: >)
            if holds.count >= server.k { acknowledgedMB = max(acknowledgedMB, holds[server.k - 1]) }
        }
    }

    /// A new history starts at `node` (promoted, or cloned/rewound): what standbys flushed of
    /// its old one no longer acknowledges anything.
    mutating func forgetFlushed(upstream node: PGNodeID) {
        for link in flushed.keys where link.upstream == node { flushed[link] = nil }
    }

    mutating func forgetFlushed(standby node: PGNodeID) {
        for link in flushed.keys where link.standby == node { flushed[link] = nil }
    }

    // MARK: Managers

    private mutating func register() throws {
        let id = nextNode
        nextNode += 1
        postgres[id] = SimulatedPostgres()
        managers[id] = SimulatedManager()
        let registration = NodeRegistration(
            node: id, name: "node\(id)", host: "10.0.0.\(id)", port: 5432, systemIdentifier: 7,
            candidatePriority: rng.next() % 5 == 0 ? 0 : 50, replicationQuorum: rng.next() % 6 != 0)
        try append(.nodeRegistered(registration))
    }

    mutating func append(_ event: ClusterEvent) throws {
        let changes = runner.append(event)
        try check(changes)
        // The stream pushes each commit, but a manager's view may lag it (a push in flight, a
        // follower witness that learns of the commit late): one in four misses this entry for
        // now, and gets it with a later one.
        for id in managers.keys.sorted() where managers[id]!.mode == .up && rng.next() % 4 != 0 { managers[id]!.state = runner.state }
    }

    /// Every manager that runs checks its lease.
    mutating func checkLeases() {
        for id in managers.keys.sorted() where managers[id]!.mode != .frozen { checkLease(id) }
    }

    /// `NodeManager.enforceLease`: renew the watchdog, or fence.
    mutating func checkLease(_ id: PGNodeID) {
        let manager = managers[id]!
        let server = postgres[id]!
        let settings = manager.state.settings
        let loggedWritable = manager.state[id].map { NodeManager.writableStates.contains($0.reached) } ?? false
        // Fencing stops postgres at once here: a running postgres of a fenced manager was
        // started since (by an action), and is held to the lease like any other.
        guard server.running, loggedWritable || !server.inRecovery, let acked = manager.lastAckedSentNanos else {
            managers[id]!.watchdogDeadline = nil
            return
        }
        if let remaining = LeaseRules.remainingByReport(nowNanos: now, lastAckedSentNanos: acked, leaseMillis: settings.primaryLeaseMillis) {
            managers[id]!.watchdogDeadline = now + remaining + Self.graceNanos
            return
        }
        if server.inRecovery {
            managers[id]!.watchdogDeadline = nil
            return
        }
        let quorumNames = Set(manager.state.quorumStandbys(excluding: id).map { ClusterState.applicationName(of: $0.id) })
        let hold = LeaseRules.remainingBySynchronousStandbys(
            peers(of: id), quorumNames: quorumNames, k: Int(settings.numberSyncStandbys), leaseMillis: settings.primaryLeaseMillis)
        if let remaining = hold.remainingNanos {
            managers[id]!.watchdogDeadline = now + remaining + Self.graceNanos
            statistics["lease held by synchronous standbys", default: 0] += 1
            return
        }
        note("node \(id): lease ran out, postgres fenced (\(hold.freshStandbys) fresh standbys)")
        postgres[id]!.running = false
        managers[id]!.fenced = true
        managers[id]!.watchdogDeadline = nil
        statistics["fenced by the lease", default: 0] += 1
    }

    /// A watchdog not renewed in time kills postgres.
    mutating func fireWatchdogs() {
        for id in managers.keys.sorted() {
            guard let deadline = managers[id]!.watchdogDeadline, now >= deadline else { continue }
            managers[id]!.watchdogDeadline = nil
            if postgres[id]!.running {
                postgres[id]!.running = false
                note("node \(id): watchdog killed postgres")
                statistics["killed by the watchdog", default: 0] += 1
            }
        }
    }

    /// What a manager reports: its postgres as it is; a primary adds its view of the standbys,
    /// from an observation up to a second old (the observation loop runs beside the heartbeat,
    /// and a busy postgres answers late).
    mutating func report(_ id: PGNodeID) -> NodeReport {
        let server = postgres[id]!
        var report = NodeReport(
            node: id, reachedState: runner.state[id]?.reached ?? .initial, postgresRunning: server.running, timeline: server.timeline,
            flushLSN: server.position << 20, replayLSN: server.position << 20, sentAtNanos: now)
        if report.reachedState == .reportLSN, let ended = managers[id]?.followingEndedNanos {
            report.followingEndedMillisAgo = UInt32(clamping: (now - ended) / 1_000_000)
        }
        if server.running && !server.inRecovery {
            report.standbys = StandbyView.primaryView(peers(of: id), currentLSN: server.position << 20, observedMillisAgo: rng.next() % 1000)
        }
        return report
    }

    /// One heartbeat entry: reports of the managers that reach the witnesses.
    mutating func heartbeat() throws {
        let reporting = runner.state.sortedNodes.map(\.id).filter { managers[$0]?.mode == .up }
        var reports: [NodeReport] = []
        for id in reporting { reports.append(report(id)) }
        try append(reports.isEmpty ? .tick : .nodeReports(reports))
        for id in reporting {
            managers[id]!.lastAckedSentNanos = now
            managers[id]!.ackedIndex = runner.state.appliedIndex
        }
    }

    /// Each manager that reaches the witnesses acts now and then, on its own view of the log
    /// once that view holds its last acknowledged report: the action of its transition (done,
    /// or still waiting), or supervision once there.
    mutating func act() throws {
        for id in runner.state.sortedNodes.map(\.id) {
            guard let manager = managers[id], manager.mode == .up, manager.lastAckedSentNanos != nil, roll(300),
                manager.state.appliedIndex >= manager.ackedIndex, let node = manager.state[id]
            else { continue }
            if manager.state.appliedIndex < runner.state.appliedIndex {
                statistics["actions on a view behind the log", default: 0] += 1
                if !node.isConverged || runner.state[id]?.goal != node.goal {
                    note("node \(id) acts on a view \(runner.state.appliedIndex - manager.state.appliedIndex) entries behind: goal \(node.goal.rawValue) there, \(runner.state[id]?.goal.rawValue ?? "-") now")
                }
            }
            if node.isConverged {
                supervise(node)
                continue
            }
            let transition: KeeperTransition
            do {
                transition = try KeeperTransitions.transition(from: node.reached, to: node.goal)
            } catch {
                throw failure("node \(id) has goal \(node.goal.rawValue) but the table has no way from \(node.reached.rawValue)")
            }
            guard perform(transition.action, on: id, towards: node.goal) else { continue }
            managers[id]!.fenced = false
            managers[id]!.quorumWait = nil
            note("node \(id): \(transition.action.rawValue) done, reached \(node.goal.rawValue)")
            try append(.stateReached(node: id, state: node.goal))
            let reached = report(id)
            try append(.nodeReports([reached]))
            managers[id]!.lastAckedSentNanos = now
            managers[id]!.ackedIndex = runner.state.appliedIndex
            // As `NodeManager.step`: the lease is checked (the watchdog armed) at once after an
            // action, not at the next check: a freeze in between would leave it unarmed.
            checkLease(id)
            statistics["states reached", default: 0] += 1
        }
    }

    /// `NodeManager.supervise`: the primary's standby names follow the log; a postgres that died
    /// in a running state starts again, a writable (or fenced) one only with a valid lease.
    mutating func supervise(_ node: NodeRecord) {
        let id = node.id
        let manager = managers[id]!
        if [.primary, .applySettings].contains(node.reached), postgres[id]!.running {
            postgres[id]!.apply(synchronousStandbyNames: manager.state.synchronousStandbyNames(for: id))
        }
        guard NodeManager.runningStates.contains(node.reached), !postgres[id]!.running else { return }
        if NodeManager.writableStates.contains(node.reached) || manager.fenced {
            guard let acked = manager.lastAckedSentNanos,
                LeaseRules.remainingByReport(nowNanos: now, lastAckedSentNanos: acked, leaseMillis: manager.state.settings.primaryLeaseMillis) != nil
            else { return }
        }
        postgres[id]!.start()
        if NodeManager.writableStates.contains(node.reached) {
            postgres[id]!.apply(synchronousStandbyNames: manager.state.synchronousStandbyNames(for: id))
        }
        managers[id]!.fenced = false
        checkLease(id)
        note("node \(id): postgres started again in \(node.reached.rawValue)")
    }

    /// `NodeManager.perform` on the simulated postgres; false while the action cannot finish
    /// yet (its source is unreachable, or it waits for standbys or WAL).
    mutating func perform(_ action: KeeperAction, on id: PGNodeID, towards goal: NodeState) -> Bool {
        let state = managers[id]!.state
        if action != .none { managers[id]!.followingEndedNanos = nil }
        var server = postgres[id]!
        defer { postgres[id] = server }
        func reachable(_ source: PGNodeID?) -> PGNodeID? {
            guard let source, source != id, postgres[source]?.running == true, connected(id, source) else { return nil }
            return source
        }
        switch action {
        case .none, .startMaintenance, .prepareForSecondary:
            break
        case .initPrimary:
            server.standbySignal = false
            server.start()
            server.apply(synchronousStandbyNames: "")
            server.readOnly = false
        case .initStandby, .initFromStandby:
            let upstream = action == .initStandby ? state.upstream(of: id)?.node : state.fastForwardSource?.id
            guard let from = reachable(upstream ?? state.primaryNode?.id) else { return false }
            let source = postgres[from]!
            server = SimulatedPostgres(
                running: true, standbySignal: true, inRecovery: true, position: source.position, timeline: source.timeline,
                upstream: action == .initStandby ? from : nil)
            forgetFlushed(standby: id)
        case .followNewPrimary:
            guard let from = state.upstream(of: id)?.node ?? state.primaryNode?.id else { return false }
            server.standbySignal = true
            server.upstream = from
            server.start()
        case .disableSyncReplication, .disableReplication:
            server.start()
            server.apply(synchronousStandbyNames: "")
        case .enableSyncReplication:
            server.start()
            server.apply(synchronousStandbyNames: state.synchronousStandbyNames(for: id))
            let wait: (goal: NodeState, targetMB: UInt64) = managers[id]!.quorumWait.flatMap { $0.goal == goal ? $0 : nil } ?? (goal, server.position)
            let listed = Set(state.quorumStandbys(excluding: id).map { ClusterState.applicationName(of: $0.id) })
            postgres[id] = server
            guard LeaseRules.quorumHolds(peers(of: id), listed: listed, k: state.standbysToHoldWrites, target: wait.targetMB << 20).holds else {
                managers[id]!.quorumWait = wait
                statistics["quorum waits unfinished", default: 0] += 1
                return false
            }
        case .stopPostgres, .dropNode:
            server.running = false
        case .startPostgres:
            server.start()
            server.apply(synchronousStandbyNames: state.synchronousStandbyNames(for: id))
        case .resumeAsPrimary:
            server.standbySignal = false
            server.upstream = nil
            server.start()
            server.apply(synchronousStandbyNames: "")
            server.readOnly = false
        case .rewindOrReinitialize, .restartStandby:
            guard let from = reachable(state.upstream(of: id)?.node ?? state.primaryNode?.id) else { return false }
            let source = postgres[from]!
            server.running = false
            server.position = min(server.position, source.position)
            server.timeline = source.timeline
            server.standbySignal = true
            server.upstream = from
            server.start()
            forgetFlushed(standby: id)
        case .reportLSN, .reportLSNAndDropSlots, .cleanupAsPrimary:
            server.standbySignal = true
            server.upstream = nil
            server.start()
            // `waitForWALReceiverToStop`: an observation without a receiver ends the action.
            postgres[id] = server
            observeReceiver(id)
            managers[id]!.followingEndedNanos = managers[id]!.receiverWatch.downSinceNanos
            if let ended = managers[id]!.followingEndedNanos, ended < now { statistics["followings ended before report_lsn", default: 0] += 1 }
        case .fastForward:
            guard let source = state.fastForwardSource else { return false }
            server.standbySignal = true
            server.upstream = source.id
            server.start()
            guard server.position << 20 >= source.lsn else { return false }
            server.upstream = nil
        case .stopReplicationAndPromote:
            server.start()
            server.readOnly = true
            server.promote()
            server.upstream = nil
            server.standbySignal = false
            server.apply(synchronousStandbyNames: "")
            forgetFlushed(upstream: id)
        case .openForWrites:
            server.start()
            server.readOnly = false
        case .promoteStandby:
            server.start()
            server.promote()
            server.upstream = nil
            server.standbySignal = false
            server.apply(synchronousStandbyNames: "")
            server.readOnly = false
            forgetFlushed(upstream: id)
        case .checkpointAndStop, .stopForPrimaryMaintenance:
            server.running = false
            if action == .checkpointAndStop {
                server.standbySignal = true
                server.upstream = nil
            }
        case .stopAndSetUpStandby:
            server.running = false
            server.standbySignal = true
            server.upstream = nil
        }
        return true
    }

    // MARK: Faults and operator requests

    /// A new Raft term. Half the new leaders carry log time over, by at most what really
    /// passed since the last entry (often all of it); the others restart every timer.
    private mutating func startTerm() throws {
        let carried: UInt64? =
            switch rng.next() % 4 {
            case 0: runner.carried(fraction: 1)
            case 1: runner.carried(fraction: Double(rng.next() % 1000) / 1000)
            default: nil
            }
        note("new term\(carried.map { ", \($0 / 1_000_000) ms carried" } ?? "")")
        try check(runner.newTerm(carriedNanos: carried))
        for id in managers.keys.sorted() where managers[id]!.mode == .up { managers[id]!.state = runner.state }
        statistics["term changes", default: 0] += 1
    }

    /// An operator's `node set`, now and then: a node leaves or joins the replication quorum,
    /// or its candidate priority goes to 0 or back up.
    private mutating func changeNodeSettings(_ ids: [PGNodeID]) throws {
        guard var generator = nodeSettings else { return }
        defer { nodeSettings = generator }
        guard generator.next() % 1000 < 8, !ids.isEmpty else { return }
        let id = ids[Int(generator.next() % UInt64(ids.count))]
        guard let record = runner.state[id] else { return }
        if generator.next() % 3 == 0 {
            let priority: UInt8 = record.registration.candidatePriority == 0 ? 50 + UInt8(generator.next() % 51) : 0
            note("node \(id): candidate priority \(priority) asked")
            try append(.operatorRequest(.setCandidatePriority(node: id, priority: priority)))
            if runner.state[id]?.registration.candidatePriority == priority { statistics["candidate priorities changed", default: 0] += 1 }
        } else {
            let enabled = !record.registration.replicationQuorum
            note("node \(id): replication quorum \(enabled) asked")
            try append(.operatorRequest(.setReplicationQuorum(node: id, enabled: enabled)))
            if runner.state[id]?.registration.replicationQuorum == enabled {
                statistics[enabled ? "quorum joins" : "quorum leaves", default: 0] += 1
            }
        }
    }

    private mutating func perturb() throws {
        let ids = runner.state.sortedNodes.map(\.id)
        guard let id = pick(ids) else { return }
        try changeNodeSettings(ids)
        if roll(6) {
            let mode = managers[id]!.mode
            let next: SimulatedManager.Mode = mode != .up ? .up : rng.next() % 2 == 0 ? .cutOff : .frozen
            managers[id]!.mode = next
            if next == .up { managers[id]!.state = runner.state }
            note("node \(id): manager \(next.rawValue)")
            statistics["managers cut off, frozen or back", default: 0] += 1
        }
        if roll(3) {
            // The whole host: its manager and every replication link.
            let isolated = managers[id]!.mode == .cutOff && ids.allSatisfy { $0 == id || !connected(id, $0) }
            let how = Cut.allCases[Int(rng.next() % 3)]
            for other in ids where other != id {
                let pair = ReplicationLink(upstream: min(id, other), standby: max(id, other))
                if isolated { cutLinks.remove(pair) } else { cut(pair, how) }
            }
            managers[id]!.mode = isolated ? .up : .cutOff
            if isolated { managers[id]!.state = runner.state }
            note("node \(id): host \(isolated ? "reconnected" : "cut off\(how == .silent ? "" : how == .resets ? " with resets" : " with resets on the standbys' side")")")
            statistics["hosts cut off or back", default: 0] += 1
        }
        if roll(8), let other = pick(ids.filter { $0 != id }) {
            let pair = ReplicationLink(upstream: min(id, other), standby: max(id, other))
            if cutLinks.contains(pair) { cutLinks.remove(pair) } else { cut(pair, Cut.allCases[Int(rng.next() % 3)]) }
            note("link \(pair.upstream)-\(pair.standby) \(cutLinks.contains(pair) ? "cut" : "healed")")
            statistics["links cut or healed", default: 0] += 1
        }
        // Half the moments come to the links of a primary the witnesses no longer hear,
        // where a standby's last replies decide whether it may still write.
        let silentPrimary = runner.state.sortedNodes.first { ClusterState.writableGoals.contains($0.reached) && !runner.state.isHealthy($0) }
        let primaryLinks = cutLinks.sorted().filter { $0.upstream == silentPrimary?.id || $0.standby == silentPrimary?.id }
        if roll(20), let pair = pick(!primaryLinks.isEmpty && rng.next() % 2 == 0 ? primaryLinks : cutLinks.sorted()) {
            if flappingLinks[pair] == nil {
                // Up for 0.1 to 0.8 s (long enough to connect and reply), or up to 3 s, then
                // cut with resets.
                cutLinks.remove(pair)
                flappingLinks[pair] = tick + 1 + Int(rng.next() % (rng.next() % 2 == 0 ? 8 : 30))
                note("link \(pair.upstream)-\(pair.standby) up for a moment")
                statistics["links up for a moment", default: 0] += 1
            }
        }
        if roll(4) {
            managers[id]!.observationsStalledUntilTick = tick + 5 + Int(rng.next() % 26)
            note("node \(id): observations of postgres stall until tick \(managers[id]!.observationsStalledUntilTick)")
            statistics["observations stalled", default: 0] += 1
        }
        if roll(4), postgres[id]!.running {
            postgres[id]!.running = false
            note("node \(id): postgres crashed")
            statistics["postgres crashes", default: 0] += 1
        }
        if roll(3) {
            if rng.next() % 2 == 0 {
                // The leader is lost: an election of 0.5 to 2 s before the new term.
                electionUntilTick = tick + 5 + Int(rng.next() % 16)
                note("witness leader lost: nothing commits until tick \(electionUntilTick!)")
            } else {
                try startTerm()
            }
        }
        if roll(5) {
            let target: PGNodeID? = rng.next() % 2 == 0 ? id : nil
            note("switchover asked\(target.map { " to node \($0)" } ?? "")")
            try append(.operatorRequest(.switchover(target: target)))
            statistics["switchovers asked", default: 0] += 1
        }
        if roll(3) {
            let enabled = rng.next() % 2 == 0
            note("maintenance \(enabled ? "on" : "off") for node \(id) asked")
            try append(.operatorRequest(.maintenance(node: id, enabled: enabled)))
        }
        if roll(2) {
            var settings = runner.state.settings
            settings.numberSyncStandbys = UInt8(rng.next() % 3)
            settings.strictSyncMode = rng.next() % 4 == 0
            settings.primaryLeaseMillis = 600 + UInt32(rng.next() % 10) * 100
            settings.nodeUnhealthyTimeoutMillis = max(settings.primaryLeaseMillis * 5 / 4, settings.primaryLeaseMillis + 500) + UInt32(rng.next() % 3) * 500
            note("settings: k=\(settings.numberSyncStandbys) strict=\(settings.strictSyncMode) lease=\(settings.primaryLeaseMillis)ms unhealthy=\(settings.nodeUnhealthyTimeoutMillis)ms")
            try append(.settingsChanged(settings))
        }
        if roll(1), ids.count > 2 {
            let asynchronousPrimary = runner.state.primaryNode.map { $0.id == id && $0.reached != .primary } ?? false
            try append(.operatorRequest(.dropNode(node: id)))
            if runner.state[id]?.goal == .dropped {
                statistics["drops", default: 0] += 1
                // Writes only the dropped node held are gone by the operator's choice, and so
                // are copies on nodes no election counts on: an old primary being failed over
                // (its extra WAL is rewound away) and nodes the operator holds in maintenance.
                let counted = runner.state.sortedNodes.filter {
                    ![.dropped, .demoted, .draining, .demoteTimeout, .maintenance, .prepareMaintenance, .waitMaintenance].contains($0.goal)
                }
                acknowledgedMB = min(acknowledgedMB, counted.map { postgres[$0.id]!.position }.max() ?? 0)
                // A primary dropped outside state primary (wait_primary: no standby known to
                // hold its writes) is replaced by the election among the healthy standbys:
                // what only unhealthy ones hold is given up by the operator too.
                if asynchronousPrimary {
                    let reachable = counted.filter { runner.state.isHealthy($0) }.map { postgres[$0.id]!.position }
                    acknowledgedMB = min(acknowledgedMB, reachable.max() ?? 0)
                }
            }
        }
        if roll(1), nextNode < 7 { try register() }
    }

    // MARK: Invariants

    private mutating func check(_ changes: [GoalChange]) throws {
        recent += changes.map { "tick \(tick): \($0)" }
        for change in changes where ClusterState.writableGoals.contains(change.to) { leaseOver.remove(change.node) }
        let state = runner.state
        if let reason = state.waitingReason, reason.hasPrefix(ClusterState.policyUnsettled) {
            throw failure(reason)
        }
        let writable = state.sortedNodes.filter { ClusterState.writableGoals.contains($0.goal) }
        if writable.count > 1 {
            throw failure("writable goals for nodes \(writable.map(\.id)): \(changes)")
        }
        for change in changes where ClusterState.writableGoals.contains(change.to) && change.from == .stopReplication {
            statistics["promotions", default: 0] += 1
            // The old primary may no longer write: fenced, or its lease provably over.
            for other in state.sortedNodes
            where other.id != change.node && ClusterState.writableGoals.contains(other.reached) && !leaseOver.contains(other.id) {
                let silentNanos = state.nowNanos - min(state.nowNanos, other.lastHeardNanos)
                guard silentNanos > UInt64(state.settings.primaryLeaseMillis) * 1_000_000 else {
                    throw failure("node \(change.node) may take writes while node \(other.id) (\(other.reached.rawValue)) holds its lease")
                }
                leaseOver.insert(other.id)
            }
        }
    }

    /// Never two postgres servers taking writes at once; one that starts taking writes holds
    /// every acknowledged write.
    private mutating func checkWritable() throws {
        let writable = Set(postgres.keys.filter { postgres[$0]!.writable })
        if writable.count > 1 {
            throw failure("nodes \(writable.sorted()) take writes at once")
        }
        for id in writable.subtracting(writableLastTick) {
            statistics["postgres opened for writes", default: 0] += 1
            if postgres[id]!.position < acknowledgedMB {
                throw failure("node \(id) takes writes at \(postgres[id]!.position) MB but \(acknowledgedMB) MB were acknowledged")
            }
            // Writes acknowledged under an earlier k stay protected for the elections of the
            // primary that acknowledged them (`electionSyncStandbys`); a primary opened while
            // the operator has turned synchronous replication off (k = 0) ends that: from
            // then on, elections count every healthy standby alike (DESIGN §5 rule 3 covers
            // synchronous replication only).
            if runner.state.settings.numberSyncStandbys == 0 { acknowledgedMB = 0 }
        }
        writableLastTick = writable
    }

    /// A reader restarting from a snapshot taken anywhere reaches the same state.
    private mutating func checkSnapshotReplay() throws {
        let log = runner.log
        let cut = Int(rng.next() % UInt64(log.count + 1))
        var prefix = ClusterState()
        prefix.replay(Array(log[..<cut]))
        var restored = try ClusterState(snapshot: prefix.snapshotData())
        restored.replay(Array(log[cut...]))
        var full = ClusterState()
        full.replay(log)
        guard restored == full, full == runner.state else {
            throw failure("replay from a snapshot at \(cut) of \(log.count) differs from full replay")
        }
    }
}
