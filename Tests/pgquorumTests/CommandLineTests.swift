import Foundation
import Manager
import NodeControl
import Testing
import TestSupport

/// Runs the built `pgquorum` executable, which SwiftPM places beside the test binary.
func runPGQuorum(_ arguments: [String]) async throws -> CommandResult {
    try await runProgram(try BuiltProducts.path(of: "pgquorum"), arguments, timeout: .seconds(30), check: false)
}

@Suite("the pgquorum executable")
struct CommandLineTests {
    @Test("--version prints the version")
    func version() async throws {
        let result = try await runPGQuorum(["--version"])
        #expect(result.termination == .exited(code: 0))
        #expect(result.output == "0.1.0\n")
    }

    @Test("--help explains what pgquorum is")
    func help() async throws {
        let result = try await runPGQuorum(["--help"])
        #expect(result.termination == .exited(code: 0))
        #expect(result.output.hasPrefix("OVERVIEW: High availability for PostgreSQL, decided by a quorum of witnesses."))
        #expect(result.output.contains("USAGE: pgquorum"))
    }

    @Test("an unknown flag is an error on stderr with a non-zero exit")
    func unknownFlag() async throws {
        let result = try await runPGQuorum(["--no-such-flag"])
        #expect(result.termination == .exited(code: 64))
        #expect(result.output.contains("Unknown option '--no-such-flag'"))
    }
}

@Suite("pgquorum fsm")
struct FSMCommandTests {
    @Test("the table lists every transition with its action and reason")
    func table() async throws {
        let result = try await runPGQuorum(["fsm"])
        #expect(result.termination == .exited(code: 0))
        let lines = result.output.split(separator: "\n")
        #expect(lines.first?.hasPrefix("CURRENT") == true)
        #expect(lines.count == KeeperTransitions.table.count + 1)
        #expect(lines.contains { $0.hasPrefix("demoted ") && $0.contains("catchingup") && $0.contains("rewindOrReinitialize") })
    }

    @Test("the mermaid format is a state diagram")
    func mermaid() async throws {
        let result = try await runPGQuorum(["fsm", "--format", "mermaid"])
        #expect(result.termination == .exited(code: 0))
        #expect(result.output.hasPrefix("stateDiagram-v2\n"))
        #expect(result.output.contains("    secondary --> report_lsn: reportLSN\n"))
    }

    @Test("an unknown format is refused, naming the choices")
    func badFormat() async throws {
        let result = try await runPGQuorum(["fsm", "--format", "dot"])
        #expect(result.termination == .exited(code: 64))
        #expect(result.output.contains("table"))
        #expect(result.output.contains("mermaid"))
    }
}
