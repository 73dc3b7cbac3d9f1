import Foundation
import NodeControl
import Testing
import TestSupport

/// `pgquorum demo`, the README's first command: real witnesses, managers and postgres.
@Suite("pgquorum demo", .serialized)
struct DemoTests {
    /// Starts `pgquorum demo --dir FOLDER` and waits until it says the cluster runs; returns the
    /// process, what it printed so far and every process below it.
    func startDemo(_ folder: TemporaryDirectory) async throws -> (demo: ChildProcess, output: String, descendants: [pid_t]) {
        let outputPath = folder.appending("demo.out")
        let demo = try ChildProcess.spawn(
            try BuiltProducts.path(of: "pgquorum"), ["demo", "--dir", folder.appending("cluster")], output: .file(path: outputPath),
            parentDeathSignal: "KILL")
        do {
            var output = ""
            try await waitUntil("the demo says it is running", timeout: .seconds(240)) {
                output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
                return output.contains("press Ctrl-C to stop") || demo.poll() != nil
            }
            if let ended = demo.poll() { throw TestSupportError("the demo \(ended): \(output)") }
            // Three witnesses, three managers, and each manager's postmaster with its backends.
            let descendants = ProcessTree.descendants(of: demo.pid)
            #expect(ProcessTree.children(of: demo.pid).count == 6, "children: \(ProcessTree.children(of: demo.pid))")
            return (demo, output, descendants)
        } catch {
            await demo.stop(signal: SIGKILL, grace: .seconds(5))
            throw error
        }
    }

    /// The URI the demo printed, checked by a write through it that lands on the primary.
    func writeThroughURI(_ output: String) async throws {
        let line = try #require(output.split(separator: "\n").first { $0.hasPrefix("  postgresql://") }, "no URI in: \(output)")
        let uri = line.trimmingCharacters(in: .whitespaces)
        #expect(uri.contains("target_session_attrs=read-write"))
        let note = try await onOwnThread { () throws -> String? in
            let connection = try PostgresConnection(PostgresConnectionOptions(uri: uri, user: "postgres"))
            defer { connection.close() }
            _ = try connection.query("CREATE TABLE demo_check (note text)")
            _ = try connection.query("INSERT INTO demo_check VALUES ('through the demo URI')")
            return try connection.scalar("SELECT note FROM demo_check")
        }
        #expect(note == "through the demo URI")
    }

    @Test("demo forms a cluster, prints its URI and how to reach it; Ctrl-C stops every process and exits 0")
    func demoRunsAndStops() async throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-demo-test")
        defer { folder.remove() }
        let (demo, output, descendants) = try await startDemo(folder)
        do {
            #expect(output.contains("witness quorum ready"))
            #expect(output.contains("export PGQUORUM_WITNESSES=127.0.0.1:"))
            #expect(output.contains("export PGQUORUM_CREDENTIALS=\(folder.appending("cluster"))/pki/operator-demo.credentials"))
            #expect(output.contains("certificates for 3 witnesses, 3 nodes and operator demo"))
            try await writeThroughURI(output)
        } catch {
            await demo.stop(signal: SIGKILL, grace: .seconds(5))
            throw error
        }
        #expect(await demo.stop(signal: SIGINT, grace: .seconds(90)) == .exited(code: 0))
        let printed = (try? String(contentsOfFile: folder.appending("demo.out"), encoding: .utf8)) ?? ""
        #expect(printed.contains("stopped every process; the files stay in \(folder.appending("cluster"))"), "\(printed)")
        #expect(ProcessTree.living(descendants) == [], "still running after the demo stopped")
    }

    @Test("when the demo is killed with SIGKILL, its witnesses, managers and postgres end too")
    func demoKilled() async throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-demo-test")
        defer { folder.remove() }
        let (demo, _, descendants) = try await startDemo(folder)
        #expect(await demo.stop(signal: SIGKILL, grace: .seconds(5)) == .signaled(signal: SIGKILL))
        do {
            try await waitUntil("every process below the demo ends", timeout: .seconds(60)) { ProcessTree.living(descendants).isEmpty }
        } catch {
            // Stopped by pid whatever happens, then reported.
            for pid in ProcessTree.living(descendants) { kill(pid, SIGKILL) }
            throw error
        }
    }
}
