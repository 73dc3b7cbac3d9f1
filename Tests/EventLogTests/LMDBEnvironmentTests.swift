import Foundation
import Testing
import TestSupport

@testable import EventLog

@Suite("LMDB environment on real files")
struct LMDBEnvironmentTests {
    @Test("a committed write is in data.mdb before the environment is closed")
    func committedWriteIsInTheFile() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let live = try folder.makeDirectory("live")
        let environment = try LMDBEnvironment(directory: live)
        let table = try environment.openDatabase("t")
        try environment.write { txn in try txn.put(table, Array("k".utf8), Array("committed".utf8)) }

        // Copy the file while the writer still has it open: what a crash would leave behind.
        let copy = try folder.makeDirectory("copy")
        try FileManager.default.copyItem(atPath: live + "/data.mdb", toPath: copy + "/data.mdb")
        let reopened = try LMDBEnvironment(directory: copy)
        let copiedTable = try reopened.openDatabase("t")
        let value = try reopened.read { txn in try txn.get(copiedTable, Array("k".utf8)) }
        #expect(value == Array("committed".utf8))
        environment.close()
    }

    @Test("values survive close and reopen, in key order")
    func reopenAfterClose() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        do {
            let environment = try LMDBEnvironment(directory: folder.path)
            let log = try environment.openDatabase("log")
            try environment.write { txn in
                for index: UInt64 in [3, 1, 2, 300] {
                    try txn.put(log, LMDBKey.uint64(index), Array("entry \(index)".utf8))
                }
            }
            environment.close()
        }
        let environment = try LMDBEnvironment(directory: folder.path)
        let log = try environment.openDatabase("log")
        let pairs = try environment.read { txn in
            var pairs: [(UInt64, String)] = []
            try txn.forEach(log) { key, value in
                pairs.append((LMDBKey.uint64(from: key) ?? 0, String(decoding: value, as: UTF8.self)))
                return true
            }
            return pairs
        }
        #expect(pairs.map(\.0) == [1, 2, 3, 300])
        #expect(pairs.map(\.1) == ["entry 1", "entry 2", "entry 3", "entry 300"])
        let (first, last, count) = try environment.read { txn in
            (try txn.first(log)?.key, try txn.last(log)?.key, try txn.count(log))
        }
        #expect(first == LMDBKey.uint64(1))
        #expect(last == LMDBKey.uint64(300))
        #expect(count == 4)
        let fromTwo = try environment.read { txn in
            var keys: [UInt64] = []
            try txn.forEach(log, from: LMDBKey.uint64(2)) { key, _ in
                keys.append(LMDBKey.uint64(from: key) ?? 0)
                return keys.count < 2
            }
            return keys
        }
        #expect(fromTwo == [2, 3])
    }

    @Test("a throw inside a write aborts it: nothing it wrote is kept")
    func throwAbortsWrite() throws {
        struct Refused: Error {}
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let environment = try LMDBEnvironment(directory: folder.path)
        let table = try environment.openDatabase("t")
        try environment.write { txn in try txn.put(table, [1], [1]) }
        #expect(throws: Refused.self) {
            try environment.write { txn in
                try txn.put(table, [1], [9])
                try txn.put(table, [2], [2])
                throw Refused()
            }
        }
        let (one, two) = try environment.read { txn in (try txn.get(table, [1]), try txn.get(table, [2])) }
        #expect(one == [1])
        #expect(two == nil)
        // The writer lock was released: another write goes through.
        try environment.write { txn in try txn.delete(table, [1]) }
        #expect(try environment.read { txn in try txn.get(table, [1]) } == nil)
    }

    @Test("a missing directory gives a clear error naming it")
    func missingDirectory() throws {
        let path = "/tmp/pgquorum-does-not-exist-\(UInt64.random(in: 0...UInt64.max))"
        let error = #expect(throws: LMDBError.self) { try LMDBEnvironment(directory: path) }
        #expect(error == .directoryMissing(path: path))
        #expect(error?.description == "LMDB directory \(path) does not exist; create it before opening the store")
    }

    @Test("a failing LMDB call carries mdb_strerror text")
    func callErrorCarriesLMDBText() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let environment = try LMDBEnvironment(directory: folder.path)
        let table = try environment.openDatabase("t")
        // LMDB refuses keys longer than its maximum key size (511 bytes by default).
        let error = #expect(throws: LMDBError.self) {
            try environment.write { txn in try txn.put(table, [UInt8](repeating: 7, count: 4096), [1]) }
        }
        #expect(error?.description.hasPrefix("LMDB mdb_put failed on \(folder.path) database t: ") == true)
        #expect(error?.description.contains("MDB_BAD_VALSIZE") == true)
    }

    @Test("the map grows on MDB_MAP_FULL and the write goes through")
    func mapGrowsWhenFull() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        var configuration = LMDBConfiguration()
        configuration.mapSizeBytes = 256 << 10
        let environment = try LMDBEnvironment(directory: folder.path, configuration: configuration)
        let table = try environment.openDatabase("t")
        let value = [UInt8](repeating: 0xAB, count: 1024)
        var attempts = 0
        try environment.write { txn in
            attempts += 1
            for index in 0..<2000 { try txn.put(table, LMDBKey.uint64(UInt64(index)), value) }
        }
        #expect(attempts > 1)
        #expect(environment.mapSizeBytes >= 2 << 20)
        let count = try environment.read { txn in try txn.count(table) }
        #expect(count == 2000)
    }

    @Test("a map that may not grow further gives mapSizeLimitReached")
    func mapLimit() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        var configuration = LMDBConfiguration()
        configuration.mapSizeBytes = 128 << 10
        configuration.mapSizeBytesMax = 256 << 10
        let environment = try LMDBEnvironment(directory: folder.path, configuration: configuration)
        let table = try environment.openDatabase("t")
        let error = #expect(throws: LMDBError.self) {
            try environment.write { txn in
                for index in 0..<1000 { try txn.put(table, LMDBKey.uint64(UInt64(index)), [UInt8](repeating: 1, count: 1024)) }
            }
        }
        #expect(error == .mapSizeLimitReached(mapSizeBytesMax: 256 << 10, context: folder.path))
        // The failed write left nothing behind and the store still works.
        try environment.write { txn in try txn.put(table, [1], [2]) }
        #expect(try environment.read { txn in try txn.count(table) } == 1)
    }

    @Test("a file where the directory should be is refused")
    func notADirectory() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let file = folder.appending("file")
        _ = FileManager.default.createFile(atPath: file, contents: Data([1]))
        #expect(throws: LMDBError.notADirectory(path: file)) { try LMDBEnvironment(directory: file) }
    }

    @Test("uint64 keys sort numerically and round-trip")
    func uint64Keys() {
        let values: [UInt64] = [0, 1, 255, 256, 1 << 40, .max]
        let keys = values.map(LMDBKey.uint64)
        #expect(keys == keys.sorted { $0.lexicographicallyPrecedes($1) })
        #expect(keys.map { LMDBKey.uint64(from: $0) } == values)
        #expect(LMDBKey.uint64(from: [1, 2]) == nil)
    }
}
