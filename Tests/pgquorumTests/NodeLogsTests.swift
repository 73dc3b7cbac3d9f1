import Foundation
import NodeControl
import Testing
import TestSupport

@Suite("pgquorum node logs")
struct NodeLogsTests {
    @Test("prints the end of the server log the collector writes now, follows what is added, and says when there is none")
    func serverLog() async throws {
        let executable = try BuiltProducts.path(of: "pgquorum")
        let fixture = try NodeFixture(name: "node_1")
        do {
            // A node's folder holds data/ and run/, as `node create` makes it.
            try await fixture.startPrimary()
            let last = try await runProgram(executable, ["node", "logs", "--dir", fixture.folder.path, "--lines", "3"], timeout: .seconds(30), check: false)
            #expect(last.termination == .exited(code: 0), "\(last.output)")
            let lines = last.output.split(separator: "\n")
            #expect(lines.first?.hasPrefix("==> \(fixture.node.dataDirectory)/log/postgresql-") == true, "\(last.output)")
            #expect(lines.count == 4, "the header and 3 lines: \(last.output)")

            let output = fixture.folder.appending("follow.out")
            let follower = try ChildProcess.spawn(executable, ["node", "logs", "--dir", fixture.folder.path, "--follow", "-n", "0"], output: .file(path: output))
            defer { follower.send(SIGKILL) }
            try await waitUntil("the follower printed its header", timeout: .seconds(30)) {
                (try String(contentsOfFile: output, encoding: .utf8)).contains("==>")
            }
            _ = try await onOwnThread { try fixture.sql("DO $$ BEGIN RAISE LOG 'pgquorum-marker-%', 42; END $$") }
            try await waitUntil("the follower prints the new line", timeout: .seconds(30)) {
                (try String(contentsOfFile: output, encoding: .utf8)).contains("pgquorum-marker-42")
            }
            #expect(await follower.stop(signal: SIGTERM, grace: .seconds(5)) == .signaled(signal: SIGTERM))
        } catch {
            await fixture.destroy()
            throw error
        }
        await fixture.destroy()

        let empty = try TemporaryDirectory(prefix: "pgquorum-nolog")
        defer { empty.remove() }
        let none = try await runProgram(executable, ["node", "logs", "--dir", empty.path], timeout: .seconds(30), check: false)
        #expect(none.termination == .exited(code: 1))
        #expect(none.output.contains("no server log in \(empty.path)/data/log: postgres has not run with its logging collector there yet"), "\(none.output)")
    }
}
