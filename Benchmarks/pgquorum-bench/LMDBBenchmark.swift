import EventLog
import Foundation
import Raft

/// Durable appends through `LMDBRaftStorage.persist`: one write transaction per batch, each
/// committed with LMDB's two fsyncs, as a witness persists each ready batch.
struct LMDBBenchmark {
    var directory: String?
    var seconds: Double
    var payloadBytes: Int
    var runs: Int

    func run() throws {
        let base = directory ?? NSTemporaryDirectory()
        print("lmdb: durable appends of \(payloadBytes)-byte entries in \(base), \(runs) runs of \(seconds) s per batch size")
        let fsyncRate = try fsyncsPerSecond(base: base)
        print(String(format: "lmdb: this disk does %.0f write+fsync per second (an LMDB commit needs two: at most %.0f commits/s)",
                     fsyncRate, fsyncRate / 2))
        for batch in [1, 100] {
            var rates: [Double] = []
            var p50s: [Double] = []
            var p99s: [Double] = []
            for run in 1...runs {
                let (rate, p50, p99) = try once(base: base, batch: batch)
                rates.append(rate)
                p50s.append(p50)
                p99s.append(p99)
                print(String(format: "  batch %3d run %d: %.0f entries/s, %.0f commits/s, commit p50 %.3f ms, p99 %.3f ms",
                             batch, run, rate, rate / Double(batch), p50, p99))
            }
            print(String(format: "lmdb: batch %d: median %.0f entries/s (%.0f commits/s), commit latency p50 %.3f ms, p99 %.3f ms",
                         batch, median(rates), median(rates) / Double(batch), median(p50s), median(p99s)))
        }
    }

    /// The disk's own limit: 128-byte writes each followed by fsync, for one second.
    private func fsyncsPerSecond(base: String) throws -> Double {
        let path = base + "/pgquorum-bench-fsync-\(getpid())"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown) }
        defer {
            close(fd)
            unlink(path)
        }
        let block = [UInt8](repeating: 1, count: 128)
        let clock = ContinuousClock()
        let began = clock.now
        var count = 0
        while clock.now - began < .seconds(1) {
            _ = block.withUnsafeBytes { pwrite(fd, $0.baseAddress, 128, off_t((count % 64) * 4096)) }
            fsync(fd)
            count += 1
        }
        return Double(count)
    }

    private func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

    private func once(base: String, batch: Int) throws -> (rate: Double, p50: Double, p99: Double) {
        let folder = base + "/pgquorum-bench-lmdb-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let storage = try LMDBRaftStorage(directory: folder)
        defer { storage.close() }
        let payload = [UInt8](repeating: 0xa5, count: payloadBytes)
        let clock = ContinuousClock()
        let began = clock.now
        var latencies: [Double] = []
        var index: UInt64 = 0
        while clock.now - began < .milliseconds(Int(seconds * 1000)) {
            let entries = (1...batch).map { Entry(term: 1, index: index + UInt64($0), data: payload) }
            let start = clock.now
            try storage.persist(hardState: HardState(term: 1, vote: 1, commit: index), entries: entries, snapshot: nil)
            let elapsed = clock.now - start
            latencies.append(Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000)
            index += UInt64(batch)
        }
        let total = clock.now - began
        let totalSeconds = Double(total.components.seconds) + Double(total.components.attoseconds) / 1e18
        latencies.sort()
        return (Double(index) / totalSeconds, latencies[latencies.count / 2], latencies[min(latencies.count - 1, latencies.count * 99 / 100)])
    }
}
