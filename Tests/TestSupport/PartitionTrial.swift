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
/// multi-host URI from the client host all along; a prober asks every node, from its own
/// host, whether it takes writes. Shared by the multi-host tests and `pgquorum-bench partition`.
public struct PartitionTrial: Sendable {
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
    /// Probe rounds in which two nodes took writes.
    public var roundsWithTwoWritable: Int = 0
    public var acknowledged: Int = 0
    public var lost: [Int] = []

    public var summary: String {
        func show(_ duration: Duration?, _ otherwise: String) -> String { duration.map { String(format: "%.1f s", Double(millis($0))! / 1000) } ?? otherwise }
        let during =
            fault.removesPrimary
            ? "old primary node \(oldPrimary) writable for \(show(oldPrimaryWritableFor, "the whole fault")), "
                + "node \(newPrimary.map(String.init) ?? "-") writable after \(show(newPrimaryWritableAfter, "never")), "
                + "first client write acknowledged after \(show(firstAckAfter, "never"))"
            : "node \(faulted) hit, primary node \(oldPrimary) \(newPrimary == oldPrimary ? "kept" : "replaced by \(newPrimary.map(String.init) ?? "-")"), longest write gap \(show(longestWriteGap, "-"))"
        return during + "; after the heal: node \(faulted) heard in \(show(heardAfterHeal, "never")), healthy and streaming in "
            + "\(show(healthyAfterHeal, "never")); \(acknowledged) writes acknowledged, \(lost.count) lost; "
            + "\(roundsWithTwoWritable) probe rounds saw two nodes take writes"
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
        try await waitUntilAsync("the writer commits", timeout: .seconds(30)) { writer.count >= 50 }
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
        let lastReport = try await clusterState()[faulted]?.lastReport?.sentAtNanos
        if fault == .frozenPrimaryManager { manager(of: old)?.send(SIGCONT) } else { try lab.heal() }
        let healedAt = ContinuousClock.now
        var trial = PartitionTrial(fault: fault, oldPrimary: old, faulted: faulted)
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
            await writer.stop()
            throw error
        }
        let healthyAt = ContinuousClock.now
        let probes = try await onOwnThread { prober.stop() }
        trial.oldPrimaryWritableFor = probes.firstNotWritable(old, after: cutAt, before: healedAt).map { $0 - cutAt }
        trial.newPrimaryWritableAfter = probes.firstWritable(otherThan: old, after: cutAt).map { $0 - cutAt }
        trial.roundsWithTwoWritable = probes.twoWritable.count
        try await waitUntilAsync("the writer commits once the cluster is healthy again", timeout: .seconds(30)) {
            writer.firstAck(after: healthyAt) != nil
        }
        await writer.stop()
        trial.firstAckAfter = writer.outage(after: cutAt)
        trial.acknowledged = writer.count
        if let primary = trial.newPrimary { trial.lost = try await lostRows(writer, on: primary) }
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
    /// pg_stat_replication showing each of them streaming.
    @discardableResult
    public func waitForHealthyAndStreaming(timeout: Duration) async throws -> ClusterState {
        let deadline = ContinuousClock.now + timeout
        while true {
            let state = try await waitForHealthy(timeout: max(deadline - ContinuousClock.now, .milliseconds(1)))
            let primary = state.primaryNode!.id
            let streaming = try? await onOwnThread {
                try self.sql(on: primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
            }
            if streaming == ["\(nodeCount - 1)"] { return state }
            guard ContinuousClock.now < deadline else {
                throw TestSupportError("timed out after \(timeout): the primary shows \(streaming ?? ["?"]) standbys streaming, not \(nodeCount - 1)")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// Asks every node of a cluster, from its own host, whether it takes writes, round after
/// round (a round asks each node once, about every 0.1–0.3 s), on a thread of its own, until
/// `stop()`.
public final class WritableProber: Sendable {
    public struct Round: Sendable {
        public var start: ContinuousClock.Instant
        public var end: ContinuousClock.Instant
        /// Per node: the answer (nil: no answer in time).
        public var answers: [PGNodeID: Bool?]
        /// Per node: when it was asked.
        public var asked: [PGNodeID: ContinuousClock.Instant] = [:]

        public var writable: [PGNodeID] { answers.filter { $0.value == true }.map(\.key).sorted() }
    }

    public struct Probes: Sendable {
        public var rounds: [Round] = []

        /// When `node` was first asked after `start` and before `end` and did not take writes.
        public func firstNotWritable(_ node: PGNodeID, after start: ContinuousClock.Instant, before end: ContinuousClock.Instant) -> ContinuousClock.Instant? {
            rounds.compactMap { round in round.asked[node].flatMap { $0 > start && $0 < end && round.answers[node] == .some(false) ? $0 : nil } }.first
        }

        public func firstWritable(otherThan node: PGNodeID, after start: ContinuousClock.Instant) -> ContinuousClock.Instant? {
            rounds.first { $0.start > start && $0.writable.contains { $0 != node } }?.start
        }

        /// Rounds in which more than one node took writes.
        public var twoWritable: [Round] { rounds.filter { $0.writable.count > 1 } }
    }

    private let probes = Mutex((Probes(), stop: false, done: false))

    public init(cluster: PGClusterFixture) {
        Thread.detachNewThread { [self] in
            while !probes.withLock({ $0.stop }) {
                var round = Round(start: ContinuousClock.now, end: ContinuousClock.now, answers: [:])
                for id in cluster.ids {
                    round.asked[id] = ContinuousClock.now
                    round.answers[id] = cluster.isWritableSeenFromItsHost(id, timeout: 1)
                }
                round.end = ContinuousClock.now
                probes.withLock { $0.0.rounds.append(round) }
                Thread.sleep(forTimeInterval: 0.05)
            }
            probes.withLock { $0.done = true }
        }
    }

    /// Stops probing (waits for the current round) and returns the answers.
    @discardableResult
    public func stop() -> Probes {
        probes.withLock { $0.stop = true }
        while !probes.withLock({ $0.done }) { Thread.sleep(forTimeInterval: 0.02) }
        return probes.withLock { $0.0 }
    }
}
