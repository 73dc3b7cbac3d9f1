import EventLog
import Foundation
import Raft
import Testing
import TestSupport

@testable import Manager

/// Seeded random event sequences through the reducer, with simulated node managers that obey
/// their goals through the transition table and a simulated PostgreSQL write position.
struct ReducerSimulation {
    struct Failure: Error, CustomStringConvertible {
        var seed: UInt64
        var step: Int
        var message: String
        var description: String { "seed \(seed), step \(step): \(message)" }
    }

    let seed: UInt64
    var rng: SeededGenerator
    var runner = StoryRunner()
    var step = 0
    /// The true flush position of each node's postgres, in MB.
    var position: [PGNodeID: UInt64] = [:]
    /// The highest position acknowledged to a client under synchronous replication so far.
    var acknowledgedMB: UInt64 = 0
    var nextNode: PGNodeID = 1
    var statistics: [String: Int] = [:]

    init(seed: UInt64) {
        self.seed = seed
        rng = SeededGenerator(seed: seed)
    }

    mutating func roll(_ perMille: UInt64) -> Bool { rng.next() % 1000 < perMille }

    var recent: [String] = []
    /// Nodes whose lease a promotion found over; they stay fenced until a writable goal.
    var leaseOver: Set<PGNodeID> = []

    func failure(_ message: String) -> Failure {
        let status = runner.statusLines().joined(separator: "\n")
        let positions = position.keys.sorted().map { "\($0)=\(position[$0]!)MB" }.joined(separator: " ")
        return Failure(seed: seed, step: step, message: "\(message)\n\(status)\npositions: \(positions) k=\(runner.state.settings.numberSyncStandbys)\nrecent:\n\(recent.suffix(40).joined(separator: "\n"))")
    }

    mutating func run(steps: Int) throws {
        for _ in 0..<(2 + Int(rng.next() % 3)) { register() }
        for _ in 0..<steps {
            step += 1
            try perturb()
            try managersAct()
            writeAndReplicate()
            let changes = runner.elapse(milliseconds: 100 + rng.next() % 400)
            try check(changes)
        }
        try checkSnapshotReplay()
    }

    private mutating func register() {
        let id = nextNode
        nextNode += 1
        runner.lsnMB[id] = 0
        position[id] = 0
        let registration = NodeRegistration(
            node: id, name: "node\(id)", host: "10.0.0.\(id)", port: 5432, systemIdentifier: 7,
            candidatePriority: rng.next() % 5 == 0 ? 0 : 50, replicationQuorum: rng.next() % 6 != 0)
        _ = runner.append(.nodeRegistered(registration))
    }

    // MARK: Faults and operator requests

    private mutating func perturb() throws {
        let ids = runner.state.sortedNodes.map(\.id)
        guard let id = ids.isEmpty ? nil : ids[Int(rng.next() % UInt64(ids.count))] else { return }
        if roll(40) {
            if runner.down.contains(id) {
                runner.down.remove(id)
                recent.append("step \(step): node \(id) manager back")
                try fenceIfNeeded(id)
            } else {
                runner.down.insert(id)
                recent.append("step \(step): node \(id) manager cut off")
            }
            statistics["manager cut off or back", default: 0] += 1
        }
        if roll(15) {
            runner.postgresRunning[id] = !(runner.postgresRunning[id] ?? true)
            recent.append("step \(step): node \(id) postgres \(runner.postgresRunning[id]! ? "up" : "down")")
            if runner.postgresRunning[id] == true { try fenceIfNeeded(id) }
        }
        if roll(10) {
            _ = runner.newTerm()
            statistics["term changes", default: 0] += 1
        }
        if roll(15) {
            let target: PGNodeID? = rng.next() % 2 == 0 ? id : nil
            try checked(runner.append(.operatorRequest(.switchover(target: target))))
            statistics["switchovers asked", default: 0] += 1
        }
        if roll(10) {
            try checked(runner.append(.operatorRequest(.maintenance(node: id, enabled: rng.next() % 2 == 0))))
        }
        if roll(4) {
            var settings = runner.state.settings
            settings.numberSyncStandbys = UInt8(rng.next() % 3)
            settings.strictSyncMode = rng.next() % 4 == 0
            try checked(runner.append(.settingsChanged(settings)))
        }
        if roll(3), ids.count > 2 {
            try checked(runner.append(.operatorRequest(.dropNode(node: id))))
            if runner.state[id]?.goal == .dropped {
                statistics["drops", default: 0] += 1
                // Writes that only the dropped node held are gone by the operator's choice, and
                // so are copies on nodes no election counts on: an old primary being failed
                // over (its extra WAL is rewound away) and nodes the operator holds in
                // maintenance.
                let kept = runner.state.sortedNodes.filter {
                    ![.dropped, .demoted, .draining, .demoteTimeout, .maintenance, .prepareMaintenance, .waitMaintenance].contains($0.goal)
                }.map { position[$0.id]! }.max() ?? 0
                acknowledgedMB = min(acknowledgedMB, kept)
            }
        }
        if roll(4), nextNode < 7 { register() }
    }

    /// A primary's manager never runs postgres writable against its goal, nor past its lease
    /// (DESIGN §5 rule 1): coming back, it reports itself fenced in demote_timeout.
    private mutating func fenceIfNeeded(_ id: PGNodeID) throws {
        guard let node = runner.state[id], ClusterState.writableGoals.contains(node.reached),
            !ClusterState.writableGoals.contains(node.goal) || runner.state.leaseExpired(node)
        else { return }
        recent.append("step \(step): node \(id) fenced itself")
        try checked(runner.append(.stateReached(node: id, state: .demoteTimeout)))
        try checked(runner.append(.nodeReports([runner.report(id, reached: .demoteTimeout)])))
    }

    /// Each manager that is up moves towards its goal, as its transition table allows.
    private mutating func managersAct() throws {
        for node in runner.state.sortedNodes where !runner.down.contains(node.id) && !node.isConverged {
            guard roll(600) else { continue }
            guard (try? KeeperTransitions.transition(from: node.reached, to: node.goal)) != nil else {
                throw failure("node \(node.id) has goal \(node.goal.rawValue) but the table has no way from \(node.reached.rawValue)")
            }
            // What the action does to the write position.
            switch node.goal {
            case .primary:
                // enableSyncReplication: done once k listed quorum standbys flushed past our LSN.
                let k = Int(runner.state.settings.numberSyncStandbys)
                let listed = runner.state.quorumStandbys(excluding: node.id).map { position[$0.id]! }.sorted(by: >)
                if k > 0 && (listed.count < k || listed[k - 1] < position[node.id]!) { continue }
            case .draining where ClusterState.writableGoals.contains(node.reached),
                .prepareMaintenance where ClusterState.writableGoals.contains(node.reached),
                .dropped where ClusterState.writableGoals.contains(node.reached):
                // A clean shutdown streams every WAL record to the standbys still connected.
                if runner.postgresRunning[node.id] ?? true {
                    for standby in runner.state.sortedNodes
                    where [.catchingUp, .secondary, .waitMaintenance].contains(standby.reached) && (runner.postgresRunning[standby.id] ?? true) {
                        position[standby.id] = max(position[standby.id]!, position[node.id]!)
                    }
                }
            case .fastForward:
                if let source = runner.state.fastForwardSource { position[node.id] = max(position[node.id]!, position[source.id]!) }
            case .catchingUp, .secondary, .joinSecondary:
                if let primary = runner.state.primaryNode, primary.id != node.id, node.reached == .demoted || node.reached == .maintenance {
                    // Rewound (or re-cloned) onto the new primary's history.
                    position[node.id] = min(position[node.id]!, position[primary.id]!)
                }
                if let primary = runner.state.primaryNode, primary.id != node.id, node.reached == .waitStandby {
                    // Cloned: a base backup holds the primary's WAL up to its end.
                    position[node.id] = position[primary.id]!
                }
            default:
                break
            }
            runner.lsnMB[node.id] = position[node.id]
            try checked(runner.append(.stateReached(node: node.id, state: node.goal)))
            try checked(runner.append(.nodeReports([runner.report(node.id, reached: node.goal)])))
            statistics["states reached", default: 0] += 1
        }
    }

    /// The node that really takes writes writes; standbys streaming from it catch up; what a
    /// client is told is committed depends on synchronous replication.
    private mutating func writeAndReplicate() {
        let state = runner.state
        guard let primary = state.sortedNodes.first(where: {
            [.single, .waitPrimary, .primary, .applySettings].contains($0.reached) && (runner.postgresRunning[$0.id] ?? true)
                && ClusterState.writableGoals.contains($0.goal)
        }) else { return }
        position[primary.id]! += 1 + rng.next() % 3
        let names = state.synchronousStandbyNames(for: primary.id)
        var streaming: [PGNodeID] = []
        for node in state.sortedNodes where node.id != primary.id {
            let following = [.catchingUp, .secondary, .waitMaintenance].contains(node.reached) && (runner.postgresRunning[node.id] ?? true)
            if following && rng.next() % 3 != 0 {
                position[node.id] = max(position[node.id]!, position[primary.id]!)
                streaming.append(node.id)
            }
        }
        let k = Int(state.settings.numberSyncStandbys)
        if primary.reached == .primary && !names.isEmpty && k > 0 {
            // ANY k: a commit is acknowledged once k of the listed standbys flushed it.
            let listed = state.quorumStandbys(excluding: primary.id).map { position[$0.id]! }.sorted(by: >)
            if listed.count >= k { acknowledgedMB = max(acknowledgedMB, listed[k - 1]) }
        }
        // Without synchronous replication (wait_primary, single, k = 0) the primary acknowledges
        // alone: those writes are asynchronous by choice, and DESIGN §5 rule 3 does not cover
        // them. No automatic failover starts from such a primary.
        for id in state.sortedNodes.map(\.id) where !runner.down.contains(id) { runner.lsnMB[id] = position[id] }
    }

    // MARK: Invariants

    private mutating func checked(_ changes: [GoalChange]) throws {
        try check(changes)
    }

    private mutating func check(_ changes: [GoalChange]) throws {
        recent += changes.map { "step \(step): \($0)" }
        for change in changes where ClusterState.writableGoals.contains(change.to) { leaseOver.remove(change.node) }
        let state = runner.state
        let writable = state.sortedNodes.filter { ClusterState.writableGoals.contains($0.goal) }
        if writable.count > 1 {
            throw failure("writable goals for nodes \(writable.map(\.id)): \(changes)")
        }
        for change in changes where ClusterState.writableGoals.contains(change.to) && change.from == .stopReplication {
            statistics["promotions", default: 0] += 1
            // The old primary may no longer write: fenced, or its lease provably over. A node
            // found so at an earlier promotion stays so: with a non-writable goal its manager
            // never takes writes again.
            for other in state.sortedNodes
            where other.id != change.node && ClusterState.writableGoals.contains(other.reached) && !leaseOver.contains(other.id) {
                let silentNanos = state.nowNanos - min(state.nowNanos, other.lastHeardNanos)
                let leaseNanos = UInt64(state.settings.primaryLeaseMillis) * 1_000_000
                guard silentNanos > leaseNanos else {
                    throw failure("node \(change.node) may take writes while node \(other.id) (\(other.reached.rawValue)) holds its lease")
                }
                leaseOver.insert(other.id)
            }
            // No acknowledged write is missing on the new primary.
            let promotedMB = position[change.node]!
            if promotedMB < acknowledgedMB {
                throw failure("node \(change.node) promoted at \(promotedMB) MB but \(acknowledgedMB) MB were acknowledged")
            }
        }
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

@Suite("reducer under random event sequences")
struct ReducerSimulationTests {
    /// `REDUCER_SIMULATION_SEEDS` seeds (1,000 by default) from `REDUCER_SIMULATION_FIRST_SEED`.
    @Test("one writable goal, promotions only after the lease, no acknowledged write lost, snapshots replay exactly")
    func manySeeds() async throws {
        let environment = ProcessInfo.processInfo.environment
        let count = environment["REDUCER_SIMULATION_SEEDS"].flatMap(UInt64.init) ?? 1000
        let first = environment["REDUCER_SIMULATION_FIRST_SEED"].flatMap(UInt64.init) ?? 1
        print("reducer simulation: seeds \(first)..<\(first + count)")
        // A long CPU-bound loop: on a thread of its own, not on the shared cooperative pool.
        let (totals, failure) = try await inBackground { () -> ([String: Int], String?) in
            var totals: [String: Int] = [:]
            for seed in first..<(first + count) {
                var simulation = ReducerSimulation(seed: seed)
                do {
                    try simulation.run(steps: 300)
                } catch let failure as ReducerSimulation.Failure {
                    return (totals, "reducer simulation failed: \(failure)\nreplay: REDUCER_SIMULATION_FIRST_SEED=\(seed) REDUCER_SIMULATION_SEEDS=1 swift test --filter ReducerSimulationTests")
                } catch {
                    return (totals, "reducer simulation seed \(seed) threw \(error)")
                }
                totals.merge(simulation.statistics, uniquingKeysWith: +)
            }
            return (totals, nil)
        }
        if let failure {
            Issue.record(Comment(rawValue: failure))
            return
        }
        print("reducer simulation: \(totals.sorted { $0.key < $1.key })")
        #expect(totals["promotions", default: 0] > Int(count) / 2)
        #expect(totals["switchovers asked", default: 0] > 0)
    }
}
