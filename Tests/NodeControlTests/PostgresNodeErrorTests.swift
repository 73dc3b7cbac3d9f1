import Foundation
import Testing
import TestSupport

@testable import NodeControl

@Suite("PostgreSQL nodes: errors are clear and nothing hangs", .serialized)
struct PostgresNodeErrorTests {
    @Test("starting on a missing or a non-PostgreSQL folder is refused by name")
    func wrongDataDirectory() async throws {
        try await withNodes(["node_1"]) { nodes in
            let node = nodes[0].node
            await #expect(throws: NodeControlError.dataDirectoryMissing(path: node.dataDirectory)) { try await node.start() }
            try FileManager.default.createDirectory(atPath: node.dataDirectory, withIntermediateDirectories: true)
            await #expect(throws: NodeControlError.notADataDirectory(path: node.dataDirectory)) { try await node.start() }
            _ = FileManager.default.createFile(atPath: node.dataDirectory + "/stray", contents: Data([1]))
            #expect(throws: NodeControlError.dataDirectoryNotEmpty(path: node.dataDirectory)) { try node.initialize(peers: []) }
        }
    }

    @Test("a port already in use fails the start with postgres's own reason, quickly")
    func portInUse() async throws {
        try await withNodes(["node_1"]) { nodes in
            let first = nodes[0]
            try await first.startPrimary()
            let second = try NodeFixture(name: "node_2", port: first.node.configuration.port)
            defer { second.folder.remove() }
            try await onOwnThread { try second.node.initialize(peers: []) }
            let clock = ContinuousClock()
            let started = clock.now
            do {
                try await second.node.start()
                Issue.record("postgres started on a port in use")
                await second.node.stop(.immediate)
            } catch let error as NodeControlError {
                guard case .startFailed(_, let reason, let logTail) = error else { throw error }
                #expect(reason.hasPrefix("postgres exited with code 1"))
                #expect(logTail.contains("Address already in use") || logTail.contains("could not create any TCP/IP sockets"))
            }
            #expect(clock.now - started < .seconds(20))
            #expect(!second.node.isRunning)
        }
    }

    @Test("pg_basebackup from an unreachable primary fails fast and leaves no data behind")
    func unreachablePrimary() async throws {
        try await withNodes(["node_2"]) { nodes in
            let node = nodes[0].node
            let nowhere = ReplicationSource(host: "127.0.0.1", port: try FreePort.next())
            let clock = ContinuousClock()
            let started = clock.now
            await #expect {
                try await onOwnThread { try node.basebackup(from: nowhere, slot: "node_2") }
            } throws: { error in
                guard case NodeControlError.commandFailed(let operation, .failed(_, _, let tail)) = error else { return false }
                return operation == "pg_basebackup from \(nowhere)" && tail.contains("Connection refused")
                    && !String(describing: error).contains(NodeFixture.password)
            }
            #expect(clock.now - started < .seconds(20))
            #expect(!FileManager.default.fileExists(atPath: node.dataDirectory + ".pgquorum-basebackup"))
            #expect(!FileManager.default.fileExists(atPath: node.dataDirectory + "/PG_VERSION"))
        }
    }

    @Test("a rewind against another cluster fails with pg_rewind's reason; with re-clone allowed it clones instead")
    func impossibleRewind() async throws {
        try await withNodes(["node_1", "node_2"]) { nodes in
            let (target, stranger) = (nodes[0], nodes[1])
            try await target.startPrimary()
            try await stranger.startPrimary()
            try stranger.sql("CREATE TABLE only_on_stranger (id int)")
            await #expect {
                _ = try await target.node.rewind(from: stranger.source, slot: nil, recloneOnFailure: false)
            } throws: { error in
                guard case NodeControlError.rewindFailed(_, let reason) = error else { return false }
                return reason.contains("source and target clusters are from different systems")
            }
            // The failed rewind left the target's own data in place.
            #expect(FileManager.default.fileExists(atPath: target.node.dataDirectory + "/PG_VERSION"))

            let outcome = try await target.node.rewind(from: stranger.source, slot: nil, recloneOnFailure: true)
            guard case .recloned(let reason) = outcome else {
                Issue.record("expected a re-clone, got \(outcome)")
                return
            }
            #expect(reason.contains("different systems"))
            try await target.node.start()
            #expect(try target.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'only_on_stranger'") == "1")
            #expect(try target.node.observe().inRecovery)
        }
    }

    @Test("LSNs parse from and format to PostgreSQL's X/Y form")
    func lsnFormat() {
        #expect(LSNFormat.parse("16/B374D848") == 0x16_B374_D848)
        #expect(LSNFormat.format(0x16_B374_D848) == "16/B374D848")
        #expect(LSNFormat.parse("0/0") == 0)
        #expect(LSNFormat.parse("nonsense") == nil)
        #expect(LSNFormat.parse("1/2/3") == nil)
    }

    @Test("pg_basebackup progress lines become byte counts and percents")
    func progressParsing() {
        #expect(ProgressParser.parse("12345/67890 kB (18%), 0/1 tablespace") == CopyProgress(copiedBytes: 12345 * 1024, totalBytes: 67890 * 1024, percent: 18))
        #expect(ProgressParser.parse("    0/22561 kB (0%), 0/1 tablespace (...data/base/1/2601)") == CopyProgress(copiedBytes: 0, totalBytes: 22561 * 1024, percent: 0))
        #expect(ProgressParser.parse("pg_basebackup: checkpoint completed") == nil)
    }

    @Test("a bad configuration is refused before anything runs")
    func badConfiguration() {
        #expect(throws: NodeControlError.invalidConfiguration("port 0 is outside 1…65535")) {
            try PostgresNode(PostgresNodeConfiguration(dataDirectory: "/tmp/a", runDirectory: "/tmp/b", port: 0, applicationName: "n"))
        }
        #expect(throws: NodeControlError.invalidConfiguration("applicationName and replicationUser must be lower-case letters, digits and _")) {
            try PostgresNode(PostgresNodeConfiguration(dataDirectory: "/tmp/a", runDirectory: "/tmp/b", port: 5432, applicationName: "x'; DROP"))
        }
    }

    @Test("a WAL receiver's latest failure for a segment the upstream removed is recognised in the server log, from its end only")
    func upstreamLacksWAL() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let node = try PostgresNode(
            PostgresNodeConfiguration(dataDirectory: folder.appending("data"), runDirectory: folder.path, port: 5432, applicationName: "n"))
        func log(_ lines: [String]) throws {
            // Older lines first, far more than the part of the log that is read.
            let padding = Array(repeating: "2026-11-26 23:40:00.000 UTC [1] LOG:  checkpoint complete: wrote 0 buffers", count: 2_000)
            try (padding + lines).joined(separator: "\n").appending("\n").write(toFile: node.logPath, atomically: false, encoding: .utf8)
        }
        #expect(node.upstreamLacksWAL() == nil)  // no log yet
        try log([
            "2026-11-26 23:46:16.160 UTC [13733] LOG:  started streaming WAL from primary at 0/5000000 on timeline 1",
            "2026-11-26 23:46:16.160 UTC [13733] FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment 000000010000000000000005 has already been removed",
            "2026-11-26 23:46:16.163 UTC [10431] LOG:  waiting for WAL to become available at 0/5000018",
            "2026-11-26 23:46:16.663 UTC [13747] LOG:  started streaming WAL from primary at 0/5000000 on timeline 1",
        ])
        #expect(node.upstreamLacksWAL() == "000000010000000000000005")
        // A later failure of another kind: the primary is away, not short of WAL.
        try log([
            "2026-11-26 23:46:16.160 UTC [13733] FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment 000000010000000000000005 has already been removed",
            "2026-11-26 23:46:18.000 UTC [13800] FATAL:  could not receive data from WAL stream: server closed the connection unexpectedly",
        ])
        #expect(node.upstreamLacksWAL() == nil)
    }
}
