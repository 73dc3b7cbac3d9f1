import EventLog
import Foundation
import Manager
import NodeControl
import TestSupport

/// A whole cluster across three lab hosts (network namespaces: needs root; one witness, one
/// node manager and one postgres per host) and a writer on the client host; per trial and
/// fault (`PartitionFault`), the fault is held for `seconds` and healed (`PartitionTrial`).
struct PartitionBenchmark {
    var trials: Int
    var cutSeconds: Int
    var faults: [PartitionFault]

    func run() async throws {
        if let reason = NetworkLab.unavailableReason { throw BenchmarkError(reason) }
        try await withNetworkLab(hostCount: 3) { lab in
            try await withPGCluster(lab: lab) { try await measure($0) }
        }
    }

    private func measure(_ cluster: PGClusterFixture) async throws {
        print("partition: three lab hosts, each a witness and a PostgreSQL 15 node; each fault held for \(cutSeconds) s, \(trials) trials")
        for fault in faults {
            print("\(fault.rawValue): \(fault)")
            var results: [PartitionTrial] = []
            for trial in 1...trials {
                let result = try await cluster.partitionTrial(fault, duration: .seconds(cutSeconds), healthyWithin: .seconds(120))
                print("  trial \(trial): \(result.summary)")
                results.append(result)
            }
            func median(_ name: String, _ values: [Duration?]) {
                let known = values.compactMap { $0 }.sorted()
                let missing = values.count - known.count
                let text = known.isEmpty ? "never" : "median \(millis(known[known.count / 2])) ms, min \(millis(known.first!)) ms, max \(millis(known.last!)) ms"
                print("  \(name): \(text)" + (missing > 0 ? " (\(missing) of \(values.count) trials: never)" : ""))
            }
            if fault.removesPrimary {
                median("old primary stops taking writes after the fault", results.map(\.oldPrimaryWritableFor))
                median("another node takes writes after the fault", results.map(\.newPrimaryWritableAfter))
                median("first write acknowledged on the client host after the fault", results.map(\.firstAckAfter))
            } else {
                median("longest time without an acknowledged write during the fault", results.map(\.longestWriteGap))
            }
            median("faulted node heard after the heal", results.map(\.heardAfterHeal))
            median("healthy, every standby streaming, after the heal", results.map(\.healthyAfterHeal))
            print(
                "  client host: writes acknowledged \(results.map(\.acknowledged).reduce(0, +)), lost \(results.map(\.lost.count).reduce(0, +)); "
                    + "times two nodes may have taken writes at once: \(results.map(\.twoWritable).reduce(0, +))")
            for writer in PartitionTrial.InHostWriter.allCases {
                let outcomes = results.compactMap { $0.inHost[writer] }
                let lost = outcomes.map(\.lost.count).sorted()
                print(
                    "  in the primary's host, \(writer.rawValue): acknowledged \(outcomes.map(\.acknowledged).reduce(0, +)), "
                        + "lost \(lost.reduce(0, +)) (per trial: median \(lost.isEmpty ? 0 : lost[lost.count / 2]), max \(lost.last ?? 0))")
            }
        }
    }
}
