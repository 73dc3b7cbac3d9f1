import EventLog
import Foundation
import Manager
import NodeControl
import Raft
import Synchronization

/// The faults of the partition scenarios (issue 15), each held for a while and then healed.
public enum PartitionFault: String, Sendable, CaseIterable, CustomStringConvertible {
    /// (a) The primary's host cut off from every other host and from the clients.
    case primaryHost = "primary-host"
    /// (b) A standby's host cut off, the witness there being the Raft leader.
    case witnessLeaderHost = "leader-host"
    /// (c) A standby's host cut off, the witness there a follower.
    case standbyHost = "standby-host"
    /// (d) The primary cut off from its standbys only (replication connections); every host
    /// still reaches the witnesses.
    case replicationLinks = "replication-links"
    /// (e) The primary's manager stopped (SIGSTOP), continued (SIGCONT) at the heal.
    case frozenPrimaryManager = "frozen-manager"

    public var description: String {
        switch self {
        case .primaryHost: "the primary's host cut off"
        case .witnessLeaderHost: "a standby's host cut off, the witness leader there"
        case .standbyHost: "a standby's host cut off, a witness follower there"
        case .replicationLinks: "the primary cut off from its standbys only"
        case .frozenPrimaryManager: "the primary's manager frozen (SIGSTOP)"
        }
    }

    /// Whether the fault takes the primary away (a failover is expected), or leaves it.
    public var removesPrimary: Bool { self == .primaryHost || self == .frozenPrimaryManager }
}

/// One fault held and healed, measured (issues 14 and 15). A writer inserts through the
/// multi-host URI from the client host all along, and three more from inside the primary's
/// host (`InHostWriter`); a prober asks every node, from its own host, whether it takes
/// writes, every 100 ms. Shared by the multi-host tests and `pgquorum-bench partition`.
public struct PartitionTrial: Sendable {
    /// The writers inside the primary's host, through the multi-host URI: during a cut they
    /// reach only the old primary.
    public enum InHostWriter: String, Sendable, CaseIterable {
        /// Commits wait for the synchronous standbys, as configured.
        case plain
        /// Cancels a statement still running after 1 s: a commit waiting for the standbys is
        /// then acknowledged, committed locally only, with a WARNING (the cancel hazard).
        case cancelling = "cancelling after 1 s"
        /// `synchronous_commit = local`: never waits for a standby.
        case localCommit = "synchronous_commit=local"

        var settings: [String: String] {
            switch self {
            case .plain: [:]
            case .cancelling: [:]
            case .localCommit: ["synchronous_commit": "local"]
            }
        }
    }

    public struct WriterOutcome: Sendable {
        public var acknowledged: Int = 0
        public var lost: [Int] = []
        /// Acknowledged with the cancel hazard's WARNING.
        public var warned: Int = 0
    }

    public var fault: PartitionFault
    public var oldPrimary: PGNodeID
    /// The node the fault hit (the primary, or a standby).
    public var faulted: PGNodeID
    public var newPrimary: PGNodeID?
    /// From the fault until the old primary stopped taking writes (asked on its own host); nil
    /// when it still took them at the heal.
    public var oldPrimaryWritableFor: Duration?
    /// From the fault until another node took writes.
    public var newPrimaryWritableAfter: Duration?
    /// From the fault until the client host's writer had a write acknowledged again after the
    /// first one that failed (zero when none failed).
    public var firstAckAfter: Duration?
    /// The longest time without an acknowledged write between the fault and the heal.
    public var longestWriteGap: Duration = .zero
    /// From the heal until a report of the faulted node's manager committed.
    public var heardAfterHeal: Duration?
    /// From the heal until one primary and every other node a converged secondary, each
    /// streaming from the primary.
    public var healthyAfterHeal: Duration?
    /// Moments two nodes may both have taken writes (overlapping windows of the prober's
    /// samples, see `WritableProber.Probes.twoWritable`).
    public var twoWritable: Int = 0
    /// The client host's writer.
    public var acknowledged: Int = 0
    public var lost: [Int] = []
    /// The writers inside the old primary's host.
    public var inHost: [InHostWriter: WriterOutcome] = [:]
    /// The formation as the client host saw it just before the heal: each node's reached and
    /// goal states, and what the reducer waited for.
    public var stateAtHeal = ""

    public var summary: String {
        func show(_ duration: Duration?, _ otherwise: String) -> String { duration.map { String(format: "%.1f s", Double(millis($0))! / 1000) } ?? otherwise }
        let during =
            fault.removesPrimary
            ? "old primary node \(oldPrimary) writable for \(show(oldPrimaryWritableFor, "the whole fault")), "
                + "node \(newPrimary.map(String.init) ?? "-") writable after \(show(newPrimaryWritableAfter, "never")), "
                + "first client write acknowledged after \(show(firstAckAfter, "never"))"
                + (newPrimaryWritableAfter == nil ? " (at the heal: \(stateAtHeal))" : "")
            : "node \(faulted) hit, primary node \(oldPrimary) \(newPrimary == oldPrimary ? "kept" : "replaced by \(newPrimary.map(String.init) ?? "-")"), longest write gap \(show(longestWriteGap, "-"))"
        let inside = InHostWriter.allCases.compactMap { writer in
            inHost[writer].map { "\(writer.rawValue) \($0.acknowledged) / \($0.lost.count)" + ($0.warned > 0 ? " (\($0.warned) with the cancel WARNING)" : "") }
        }
        return during + "; after the heal: node \(faulted) heard in \(show(heardAfterHeal, "never")), healthy and streaming in "
            + "\(show(healthyAfterHeal, "never")); client host: \(acknowledged) writes acknowledged, \(lost.count) lost; "
            + "in the primary's host (acknowledged / lost): \(inside.joined(separator: ", ")); "
            + "\(twoWritable) times two nodes may have taken writes at once"
    }
}

/// A duration in milliseconds with two decimals, for printing.
public func millis(_ duration: Duration) -> String {
    let value = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    return String(format: "%.2f", value)
}

extension PGClusterFixture {
    /// Holds `fault` for `duration`, heals, and measures (see `PartitionTrial`). Needs a lab
    /// cluster; the writer fills a table of its own. Returns once the cluster is healthy
    /// again, or throws when it is not within `healthyWithin` of the heal.
    public func partitionTrial(
        _ fault: PartitionFault = .primaryHost, duration: Duration = .seconds(30), healthyWithin: Duration = .seconds(90)
    ) async throws -> PartitionTrial {
        guard let lab else { throw TestSupportError("a partition trial needs a lab cluster") }
        let old = try await waitForHealthyAndStreaming(timeout: .seconds(120)).primaryNode!.id
        let faulted = try await target(of: fault, primary: old)
        let table = "partition_\(UInt32.random(in: 0...UInt32.max))"
        try await createTable(table)
        let writer = RowWriter(uri: try await uri(), table: table)
        var inHostWriters: [PartitionTrial.InHostWriter: RowWriter] = [:]
        for kind in PartitionTrial.InHostWriter.allCases {
            let name = "\(table)_\(kind)"
            try await createTable(name)
            inHostWriters[kind] = RowWriter(
                uri: try await uri(), table: name, settings: kind.settings, cancelAfter: kind == .cancelling ? .seconds(1) : nil,
                namespace: host(of: old)!.namespace)
        }
        func stopWriters() async {
            await writer.stop()
            for writer in inHostWriters.values { await writer.stop() }
        }
        do {
            try await waitUntilAsync("the writers commit", timeout: .seconds(30)) {
                writer.count >= 50 && inHostWriters.values.allSatisfy { $0.count >= 20 }
            }
        } catch {
            await stopWriters()
            let failures = inHostWriters.compactMap { kind, writer in writer.failure.map { "\(kind): \($0)" } }
            throw failures.isEmpty ? error : TestSupportError("\(error); \(failures.joined(separator: "; "))")
        }
        let prober = WritableProber(cluster: self)
        let cutAt = ContinuousClock.now
        switch fault {
        case .primaryHost, .witnessLeaderHost, .standbyHost:
            try lab.isolate(host(of: faulted)!)
        case .replicationLinks:
            for standby in ids where standby != old { try lab.cutPort(host(of: old)!, from: host(of: standby)!, port: port(of: old)) }
        case .frozenPrimaryManager:
            manager(of: old)?.send(SIGSTOP)
        }
        try await Task.sleep(until: cutAt + duration)
        let atHeal = try await clusterState()
        let lastReport = atHeal[faulted]?.lastReport?.sentAtNanos
        if fault == .frozenPrimaryManager { manager(of: old)?.send(SIGCONT) } else { try lab.heal() }
        let healedAt = ContinuousClock.now
        var trial = PartitionTrial(fault: fault, oldPrimary: old, faulted: faulted)
        trial.stateAtHeal = atHeal.sortedNodes.map { "node \($0.id) \($0.reached.rawValue) -> \($0.goal.rawValue)" }.joined(separator: ", ")
            + (atHeal.waitingReason.map { "; waiting: \($0)" } ?? "")
        trial.longestWriteGap = writer.longestGap(from: cutAt, to: healedAt)
        do {
            // Heard: a report of the faulted node's manager sent after the fault committed.
            while ContinuousClock.now - healedAt < healthyWithin {
                if let state = try? await clusterState(), state[faulted]?.lastReport?.sentAtNanos != lastReport {
                    trial.heardAfterHeal = ContinuousClock.now - healedAt
                    break
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            let healthy = try await waitForHealthyAndStreaming(timeout: healthyWithin - (ContinuousClock.now - healedAt))
            trial.healthyAfterHeal = ContinuousClock.now - healedAt
            trial.newPrimary = healthy.primaryNode?.id
        } catch {
            _ = try? await onOwnThread { prober.stop() }
            await stopWriters()
            throw error
        }
        let healthyAt = ContinuousClock.now
        let probes = try await onOwnThread { prober.stop() }
        trial.oldPrimaryWritableFor = probes.firstNotWritable(old, after: cutAt, before: healedAt).map { $0 - cutAt }
        trial.newPrimaryWritableAfter = probes.firstWritable(otherThan: old, after: cutAt).map { $0 - cutAt }
        trial.twoWritable = probes.twoWritable.count
        do {
            try await waitUntilAsync("the writer commits once the cluster is healthy again", timeout: .seconds(30)) {
                writer.firstAck(after: healthyAt) != nil
            }
        } catch {
            await stopWriters()
            throw error
        }
        await stopWriters()
        trial.firstAckAfter = writer.outage(after: cutAt)
        trial.acknowledged = writer.count
        if let primary = trial.newPrimary {
            trial.lost = try await lostRows(writer, on: primary)
            for (kind, inside) in inHostWriters {
                trial.inHost[kind] = PartitionTrial.WriterOutcome(
                    acknowledged: inside.count, lost: try await lostRows(inside, on: primary), warned: inside.acknowledgedWithWarning)
            }
        }
        return trial
    }

    /// The node `fault` hits. For a witness leader's host, the leader is first moved off the
    /// primary's host if it runs there (witness N and node N share lab host N − 1).
    private func target(of fault: PartitionFault, primary: PGNodeID) async throws -> PGNodeID {
        switch fault {
        case .primaryHost, .replicationLinks, .frozenPrimaryManager:
            return primary
        case .witnessLeaderHost:
            var leader = try await witnesses.waitForLeader()
            if leader == NodeID(primary) {
                // The leader hands over on SIGTERM; started again, it follows.
                _ = await witnesses.stop(leader)
                leader = try await witnesses.waitForLeader(among: [1, 2, 3].filter { $0 != leader })
                try witnesses.start(NodeID(primary))
            }
            return PGNodeID(leader)
        case .standbyHost:
            let leader = try await witnesses.waitForLeader()
            return ids.first { $0 != primary && NodeID($0) != leader }!
        }
    }

    /// One primary, every other node a converged secondary, and the primary's
    /// pg_stat_replication showing each of them streaming, as does its latest committed
    /// report (what a switchover's choice of candidate reads).
    @discardableResult
    public func waitForHealthyAndStreaming(timeout: Duration) async throws -> ClusterState {
        let deadline = ContinuousClock.now + timeout
        while true {
            let state = try await waitForHealthy(timeout: max(deadline - ContinuousClock.now, .milliseconds(1)))
            let primary = state.primaryNode!.id
            let streaming = try? await onOwnThread {
                try self.sql(on: primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
            }
            let reported = state.sortedNodes.allSatisfy { $0.id == primary || state.seenStreamingByPrimary($0) }
            if streaming == ["\(nodeCount - 1)"], reported { return state }
            guard ContinuousClock.now < deadline else {
                throw TestSupportError("timed out after \(timeout): the primary shows \(streaming ?? ["?"]) standbys streaming, not \(nodeCount - 1)")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// Asks every node of a cluster, from its own host, whether it takes writes, every 100 ms,
/// each node on a thread of its own (in that node's lab host), with a new connection each
/// time, as a `target_session_attrs=read-write` client would; until `stop()`.
public final class WritableProber: Sendable {
    public struct Sample: Sendable {
        public var asked: ContinuousClock.Instant
        public var answered: ContinuousClock.Instant
        /// nil: no answer in time.
        public var writable: Bool?
    }

    public struct Probes: Sendable {
        public var samples: [PGNodeID: [Sample]] = [:]

        /// When `node` was first seen not taking writes after `start` and before `end`.
        public func firstNotWritable(_ node: PGNodeID, after start: ContinuousClock.Instant, before end: ContinuousClock.Instant) -> ContinuousClock.Instant? {
            samples[node]?.first { $0.asked > start && $0.answered < end && $0.writable == false }?.answered
        }

        /// When a node other than `node` was first seen taking writes after `start`.
        public func firstWritable(otherThan node: PGNodeID, after start: ContinuousClock.Instant) -> ContinuousClock.Instant? {
            samples.filter { $0.key != node }.values.compactMap { $0.first { $0.asked > start && $0.writable == true }?.answered }.min()
        }

        /// The windows in which `node` may have taken writes: from the last sample before a
        /// writable one that said no (when it was asked) to the next one that says no (when it
        /// answered); unanswered samples in between widen the window.
        public func mayBeWritable(_ node: PGNodeID) -> [Range<ContinuousClock.Instant>] {
            var windows: [Range<ContinuousClock.Instant>] = []
            var lastNo: ContinuousClock.Instant?
            var open: ContinuousClock.Instant?
            for sample in samples[node] ?? [] {
                switch sample.writable {
                case true?:
                    if open == nil { open = lastNo ?? sample.asked }
                case false?:
                    if let start = open { windows.append(start..<sample.answered) }
                    open = nil
                    lastNo = sample.asked
                case nil:
                    break
                }
            }
            if let start = open, let last = samples[node]?.last { windows.append(start..<max(last.answered, start)) }
            return windows
        }

        /// Pairs of windows of two nodes that overlap: moments two nodes may both have taken
        /// writes. Each window reaches a sample (about 100 ms) beyond what was seen, so two
        /// writable nodes a few hundred milliseconds apart count too.
        public var twoWritable: [(PGNodeID, PGNodeID, ContinuousClock.Instant)] {
            let nodes = samples.keys.sorted()
            var overlaps: [(PGNodeID, PGNodeID, ContinuousClock.Instant)] = []
            for (index, a) in nodes.enumerated() {
                for b in nodes[(index + 1)...] {
                    for x in mayBeWritable(a) {
                        for y in mayBeWritable(b) where x.overlaps(y) { overlaps.append((a, b, max(x.lowerBound, y.lowerBound))) }
                    }
                }
            }
            return overlaps
        }
    }

    private let probes = Mutex((Probes(), stop: false, running: 0))

    public init(cluster: PGClusterFixture, every interval: Duration = .milliseconds(100)) {
        for id in cluster.ids {
            let namespace = cluster.host(of: id)?.namespace
            let (address, port) = (cluster.address(of: id), cluster.port(of: id))
            probes.withLock { $0.running += 1 }
            Thread.detachNewThread { [self] in
                defer { probes.withLock { $0.running -= 1 } }
                if let namespace { try? NetworkLab.enterNetwork(of: namespace) }
                while !probes.withLock({ $0.stop }) {
                    let asked = ContinuousClock.now
                    let writable = Self.isWritable(address: address, port: port)
                    let sample = Sample(asked: asked, answered: ContinuousClock.now, writable: writable)
                    probes.withLock { $0.0.samples[id, default: []].append(sample) }
                    let rest = asked + interval - ContinuousClock.now
                    if rest > .zero { Thread.sleep(forTimeInterval: Double(rest.components.attoseconds) / 1e18 + Double(rest.components.seconds)) }
                }
            }
        }
    }

    /// Whether the postgres at `address:port` accepts a connection, is not in recovery and is
    /// not read-only; nil when it did not answer within 2 s.
    private static func isWritable(address: String, port: Int) -> Bool? {
        var options = PostgresConnectionOptions(host: address, port: port, user: "postgres", database: "postgres")
        options.connectTimeoutSeconds = 2
        options.settings = ["statement_timeout": "2000"]
        do {
            let connection = try PostgresConnection(options)
            defer { connection.close() }
            let rows = try connection.query("SELECT NOT pg_is_in_recovery() AND current_setting('default_transaction_read_only') = 'off'").rows
            return (rows.first?.first ?? nil) == "t"
        } catch {
            // Refused, or reset: postgres is down or on its way down.
            return "\(error)".contains("timeout") ? nil : false
        }
    }

    /// Stops probing (waits for the current samples) and returns the answers.
    @discardableResult
    public func stop() -> Probes {
        probes.withLock { $0.stop = true }
        while probes.withLock({ $0.running }) > 0 { Thread.sleep(forTimeInterval: 0.02) }
        return probes.withLock { $0.0 }
    }
}
