import EventLog
import Foundation
import NodeControl
import Testing
import TestSupport

@Suite("node create and the PostgreSQL programs")
struct NodeCreateInstallationTests {
    @Test("--pg-bindir without postgres, and server programs of another major version than the data directory's, are refused before anything is registered")
    func refused() async throws {
        let executable = try BuiltProducts.path(of: "pgquorum")
        let folder = try TemporaryDirectory(prefix: "pgquorum-bindir-cli")
        defer { folder.remove() }
        let pki = try PKIDirectory.create(at: folder.appending("pki"))
        let credentials = try pki.issue(try ClusterIdentity(role: .node, name: "alpha"), hosts: ["127.0.0.1"])
        let node = folder.appending("alpha")
        // No witness listens at port 1: a refusal must come before any is asked.
        func create(_ extra: [String]) async throws -> CommandResult {
            try await runProgram(
                executable,
                ["node", "create", "--dir", node, "--name", "alpha", "--host", "127.0.0.1", "--port", "6543", "--witnesses", "127.0.0.1:1",
                 "--credentials", credentials] + extra, timeout: .seconds(30), check: false)
        }
        let missing = try await create(["--pg-bindir", folder.path])
        #expect(missing.termination == .exited(code: 1))
        #expect(missing.output == "Error: PostgreSQL program \(folder.path)/postgres is missing; run scripts/setup to install postgresql-15\n", "\(missing.output)")

        try FileManager.default.createDirectory(atPath: node + "/data", withIntermediateDirectories: true)
        try "14\n".write(toFile: node + "/data/PG_VERSION", atomically: true, encoding: .utf8)
        let older = try await create([])
        #expect(older.termination == .exited(code: 1))
        #expect(
            older.output.contains("was made by PostgreSQL 14, but the programs in \(PostgresInstallation.packagedBinDirectory) are PostgreSQL 15"),
            "\(older.output)")

        // node run checks it too (the programs changed under a node created before).
        let conf = ["id: 1", "name: alpha", "host: 127.0.0.1", "port: 6543", "witnesses: 127.0.0.1:1", "credentials: \(credentials)", "formation: default"]
        try (conf.joined(separator: "\n") + "\n").write(toFile: node + "/node.conf", atomically: true, encoding: .utf8)
        let run = try await runProgram(executable, ["node", "run", "--dir", node], timeout: .seconds(30), check: false)
        #expect(run.termination == .exited(code: 1))
        #expect(run.output.contains("was made by PostgreSQL 14, but the programs in"), "\(run.output)")
    }
}
