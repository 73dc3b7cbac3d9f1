import EventLog
import Foundation
import Manager
import NodeControl
import TestSupport

/// A whole cluster across three lab hosts (network namespaces: needs root; one witness, one
/// node manager and one postgres per host) and a writer on the client host; per trial the
/// primary's host is cut off for `cut` seconds and healed (`PartitionTrial`).
struct PartitionBenchmark {
    var trials: Int
    var cutSeconds: Int

    func run() async throws {
        if let reason = NetworkLab.unavailableReason { throw BenchmarkError(reason) }
        try await withNetworkLab(hostCount: 3) { lab in
            let cluster = try PGClusterFixture(lab: lab)
            do {
                try await measure(cluster)
            } catch {
                print(cluster.logs())
                await cluster.destroy()
                throw error
            }
            await cluster.destroy()
        }
    }

    private func measure(_ cluster: PGClusterFixture) async throws {
        try await cluster.start()
        print("partition: three lab hosts, each a witness and a PostgreSQL 15 node; the primary's host cut off for \(cutSeconds) s, \(trials) trials")
        var results: [PartitionTrial] = []
        for trial in 1...trials {
            let result = try await cluster.partitionTrial(cut: .seconds(cutSeconds), healthyWithin: .seconds(120))
            print("  trial \(trial): \(result.summary)")
            results.append(result)
        }
        func median(_ name: String, _ values: [Duration?]) {
            let known = values.compactMap { $0 }.sorted()
            let missing = values.count - known.count
            let text = known.isEmpty ? "never" : "median \(millis(known[known.count / 2])) ms, min \(millis(known.first!)) ms, max \(millis(known.last!)) ms"
            print("  \(name): \(text)" + (missing > 0 ? " (\(missing) of \(values.count) trials: never / the whole cut)" : ""))
        }
        median("old primary stops taking writes after the cut", results.map(\.oldPrimaryWritableFor))
        median("another node takes writes after the cut", results.map(\.newPrimaryWritableAfter))
        median("first write acknowledged on the client host after the cut", results.map(\.firstAckAfter))
        median("old primary heard after the heal", results.map(\.heardAfterHeal))
        median("healthy, every standby streaming, after the heal", results.map(\.healthyAfterHeal))
        print("  writes acknowledged \(results.map(\.acknowledged).reduce(0, +)), lost \(results.map(\.lost.count).reduce(0, +))")
    }
}
