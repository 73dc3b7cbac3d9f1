import EventLog
import Foundation
import Raft
import TestSupport

/// Three real witness processes on loopback (the `pgquorum` executable built beside this
/// one): append throughput with 1 and 64 concurrent appenders, append latency with one,
/// linearizable (ReadIndex) and stale reads with 1 and 64 readers, and the time from SIGKILL
/// of the leader to the next committed append.
struct WitnessBenchmark {
    var seconds: Double
    var trials: Int
    /// Where the witnesses' folders go (/tmp by default; /dev/shm takes the disk out).
    var root: String

    func run() async throws {
        let cluster = try WitnessClusterFixture(root: root)
        do {
            try await measure(cluster)
        } catch {
            print(cluster.logs())
            await cluster.destroy()
            throw error
        }
        await cluster.destroy()
    }

    private func measure(_ cluster: WitnessClusterFixture) async throws {
        try cluster.startAll()
        _ = try await cluster.waitForLeader()
        let client = cluster.client()
        defer { client.close() }
        _ = try await appendFor(client, seconds: 1, appenders: 8)  // warm up

        let single = try await appendFor(client, seconds: seconds, appenders: 1)
        let many = try await appendFor(client, seconds: seconds, appenders: 64)
        print("three witness processes on loopback, data under \(root), \(seconds) s per figure")
        print(
            "  1 appender:   \(format(Double(single.count) / seconds)) events/s committed; latency p50 \(millis(single.percentile(0.5))) ms, p99 \(millis(single.percentile(0.99))) ms"
        )
        print(
            "  64 appenders: \(format(Double(many.count) / seconds)) events/s committed; latency p50 \(millis(many.percentile(0.5))) ms, p99 \(millis(many.percentile(0.99))) ms"
        )
        // Reads of the newest entry, so the figure is the cost of the read itself (the
        // confirmation round), not of copying entries. The client asks witness 1 first.
        let leader = try await cluster.waitForLeader()
        print("  reads (witness 1 serves them; the leader is witness \(leader)):")
        for (readers, stale) in [(1, false), (64, false), (1, true), (64, true)] {
            let reads = try await readFor(client, seconds: seconds, readers: readers, stale: stale)
            print(
                "    \(readers == 1 ? " 1 reader: " : "64 readers:") \(stale ? "stale       " : "linearizable") \(format(Double(reads.count) / seconds)) reads/s; latency p50 \(millis(reads.percentile(0.5))) ms, p99 \(millis(reads.percentile(0.99))) ms"
            )
        }

        var failovers: [Duration] = []
        for trial in 1...trials {
            let leader = try await cluster.waitForLeader()
            let acks = AckTimes()
            let appender = Task {
                while !Task.isCancelled {
                    if (try? await client.append(.stateReached(node: 1, state: .single))) != nil {
                        acks.record(ContinuousClock.now)
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(300))
            let killedAt = ContinuousClock.now
            await cluster.kill(leader)
            let deadline = killedAt + .seconds(30)
            while acks.first(after: killedAt) == nil && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            appender.cancel()
            _ = await appender.value
            guard let resumed = acks.first(after: killedAt) else { throw BenchmarkError("no append committed within 30 s of killing the leader") }
            failovers.append(resumed - killedAt)
            print("  trial \(trial): leader \(leader) killed; next append committed after \(millis(resumed - killedAt)) ms")
            try cluster.start(leader)
            let commit = try await cluster.status(of: try await cluster.waitForLeader()).commit
            try await waitUntilAsync("witness \(leader) catches up", timeout: .seconds(30)) {
                try await cluster.status(of: leader).applied >= commit
            }
        }
        let sorted = failovers.sorted()
        print(
            "  leader SIGKILL -> next committed append, \(trials) trials: median \(millis(sorted[sorted.count / 2])) ms, min \(millis(sorted.first!)) ms, max \(millis(sorted.last!)) ms"
        )
    }

    private func readFor(_ client: WitnessClient, seconds: Double, readers: Int, stale: Bool) async throws -> Latencies {
        let newest = try await client.status().commit
        return try await timeFor(seconds: seconds, workers: readers) { _ = try await client.read(from: newest, maxEntries: 1, stale: stale) }
    }

    private func appendFor(_ client: WitnessClient, seconds: Double, appenders: Int) async throws -> Latencies {
        try await timeFor(seconds: seconds, workers: appenders) { _ = try await client.append(.stateReached(node: 1, state: .single)) }
    }

    /// Runs `operation` in a loop on `workers` concurrent tasks for `seconds`; every latency.
    private func timeFor(seconds: Double, workers: Int, _ operation: @escaping @Sendable () async throws -> Void) async throws -> Latencies {
        let end = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        return try await withThrowingTaskGroup(of: [Duration].self) { group in
            for _ in 0..<workers {
                group.addTask {
                    var latencies: [Duration] = []
                    while ContinuousClock.now < end {
                        let start = ContinuousClock.now
                        try await operation()
                        latencies.append(ContinuousClock.now - start)
                    }
                    return latencies
                }
            }
            var all: [Duration] = []
            for try await latencies in group { all += latencies }
            return Latencies(values: all.sorted())
        }
    }
}

struct Latencies {
    var values: [Duration]
    var count: Int { values.count }
    func percentile(_ fraction: Double) -> Duration {
        values.isEmpty ? .zero : values[min(values.count - 1, Int(Double(values.count) * fraction))]
    }
}

final class AckTimes: @unchecked Sendable {
    private let lock = NSLock()
    private var times: [ContinuousClock.Instant] = []

    func record(_ time: ContinuousClock.Instant) { lock.withLock { times.append(time) } }
    func first(after instant: ContinuousClock.Instant) -> ContinuousClock.Instant? { lock.withLock { times.first { $0 > instant } } }
}

struct BenchmarkError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func format(_ value: Double) -> String { String(format: "%.0f", value) }
