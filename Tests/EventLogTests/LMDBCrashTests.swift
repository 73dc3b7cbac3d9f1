import Foundation
import NodeControl
import Raft
import Testing
import TestSupport

@testable import EventLog

@Suite("LMDB storage under SIGKILL")
struct LMDBCrashTests {
    /// The entry the child writes at `index` (the same function as in Tests/TestHelper).
    func expectedEntry(_ index: UInt64) -> Entry {
        let data = Array("entry-\(index)-".utf8) + [UInt8](repeating: UInt8(index % 251), count: Int(index % 64))
        return Entry(term: 1 + index / 1000, index: index, data: data)
    }

    @Test("every index the child printed after its commit survives SIGKILL, 24 times over")
    func killedWriterLosesNothingAcknowledged() async throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let store = try folder.makeDirectory("store")
        let child = try BuiltProducts.path(of: "pgquorum-test-helper")
        var generator = SeededGenerator(seed: 2026)
        var acknowledgedMax: UInt64 = 0
        for round in 1...24 {
            let output = folder.appending("round-\(round).out")
            let process = try ChildProcess.spawn(child, ["lmdb-append", store, String(round)], output: .file(path: output))
            // Let it write for a while: the kill lands at a random moment of its loop.
            try await Task.sleep(for: .milliseconds(30 + Int(generator.next() % 170)))
            process.send(SIGKILL)
            let ended = await process.wait(timeout: .seconds(10))
            #expect(ended == .signaled(signal: SIGKILL), "round \(round): the child ended early: \(ended.map(String.init(describing:)) ?? "still running")")

            let printed = (try String(contentsOfFile: output, encoding: .utf8))
                .split(separator: "\n").compactMap { UInt64($0) }
            acknowledgedMax = max(acknowledgedMax, printed.max() ?? 0)

            let storage = try LMDBRaftStorage(directory: store)
            defer { storage.close() }
            let first = try storage.firstIndex()
            let last = try storage.lastIndex()
            #expect(last >= acknowledgedMax, "round \(round): printed \(acknowledgedMax) but the store ends at \(last)")
            let checkFrom = max(first, last > 300 ? last - 300 : first)
            if checkFrom <= last {
                let stored = try storage.entries(from: checkFrom, to: last + 1, maxBytes: .max)
                #expect(stored == (checkFrom...last).map(expectedEntry), "round \(round): stored entries differ")
            }
            let snapshot = try storage.snapshot()
            if !snapshot.isEmpty {
                #expect(snapshot.data == Array("snapshot at \(snapshot.metadata.index)".utf8))
            }
        }
        #expect(acknowledgedMax > 100, "the child hardly wrote anything: \(acknowledgedMax)")
    }
}
