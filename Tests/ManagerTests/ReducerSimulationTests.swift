import EventLog
import Foundation
import Raft
import Testing
import TestSupport

@testable import Manager

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
                    try simulation.run(ticks: 1000)
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
