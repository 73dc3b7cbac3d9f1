import Foundation
import Testing
import TestSupport

@testable import Raft

@Suite("deterministic simulation")
struct SimulationTests {
    /// CI runs `RAFT_SIMULATION_SEEDS` seeds (1,000 by default) from `RAFT_SIMULATION_FIRST_SEED`.
    /// A failing seed is printed and replays exactly with `RAFT_SIMULATION_FIRST_SEED=N
    /// RAFT_SIMULATION_SEEDS=1`.
    @Test("safety and linearizable reads under faults, then liveness once healed, over many seeds")
    func manySeeds() async throws {
        let environment = ProcessInfo.processInfo.environment
        let count = environment["RAFT_SIMULATION_SEEDS"].flatMap(UInt64.init) ?? 1000
        let first = environment["RAFT_SIMULATION_FIRST_SEED"].flatMap(UInt64.init) ?? 1
        print("raft simulation: seeds \(first)..<\(first + count)")
        // A long CPU-bound loop: on a thread of its own, not on the cooperative pool that the
        // other tests share.
        let outcome = try await inBackground { () throws -> (Simulation.Statistics, String?) in
            var totals = Simulation.Statistics()
            for seed in first..<(first + count) {
                var simulation = try Simulation(seed: seed)
                do {
                    try simulation.run()
                } catch let failure as SimulationFailure {
                    return (totals, "raft simulation failed: \(failure)\nreplay: RAFT_SIMULATION_FIRST_SEED=\(seed) RAFT_SIMULATION_SEEDS=1 swift test --filter SimulationTests")
                }
                let s = simulation.statistics
                totals.elections += s.elections
                totals.crashes += s.crashes
                totals.partitions += s.partitions
                totals.compactions += s.compactions
                totals.snapshotsInstalled += s.snapshotsInstalled
                totals.membershipChanges += s.membershipChanges
                totals.transfers += s.transfers
                totals.committed += s.committed
                totals.oneWayCuts += s.oneWayCuts
                totals.learnersAdded += s.learnersAdded
                totals.lateMessages += s.lateMessages
                totals.writesAcknowledged += s.writesAcknowledged
                totals.readsServed += s.readsServed
            }
            return (totals, nil)
        }
        let (totals, failure) = outcome
        if let failure {
            Issue.record(Comment(rawValue: failure))
            return
        }
        print("raft simulation: \(totals)")
        // The faults must really have happened, or the run proves little.
        #expect(totals.crashes > count)
        #expect(totals.partitions > count)
        #expect(totals.snapshotsInstalled > 0)
        #expect(totals.membershipChanges > 0)
        #expect(totals.transfers > 0)
        #expect(totals.committed > 10 * count)
        #expect(totals.oneWayCuts > count)
        #expect(totals.learnersAdded > 0)
        #expect(totals.lateMessages > count)
        #expect(totals.writesAcknowledged > 10 * count)
        #expect(totals.readsServed > 10 * count)
    }

    @Test("the same seed replays exactly")
    func replay() throws {
        var first = try Simulation(seed: 42)
        try first.run()
        var second = try Simulation(seed: 42)
        try second.run()
        #expect(first.appliedAt.count == second.appliedAt.count)
        #expect(first.appliedAt.keys.sorted().map { first.appliedAt[$0]!.hash } == second.appliedAt.keys.sorted().map { second.appliedAt[$0]!.hash })
        #expect(first.now == second.now)
    }
}
