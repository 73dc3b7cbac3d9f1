import Foundation
import NodeControl

/// Runs blocking work (libpq calls that wait, child programs) on a thread of its own
/// (NodeControl's `blocking`), so that it neither occupies nor waits for a thread of Swift's
/// cooperative pool — which every test of the process shares: two tests blocking it on a
/// two-core machine stop every other test's tasks, their clients and timers, until one
/// returns.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await blocking(body)
}

/// `runCommand` on a thread of its own (see `onOwnThread`).
@discardableResult
public func runProgram(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, timeout: Duration = .seconds(120), check: Bool = true
) async throws -> CommandResult {
    try await onOwnThread { try runCommand(executable, arguments, environment: environment, timeout: timeout, check: check) }
}

/// Runs long CPU-bound work (the simulations) on a thread of its own at the lowest
/// scheduling priority (nice 19): on a two-core machine, the tests that run beside it —
/// witnesses, managers and postgres with timeouts of a few seconds — get the processors first,
/// and it takes what they leave.
public func inBackground<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await onOwnThread {
        // Linux keeps the nice value per thread: PRIO_PROCESS with 0 is the calling thread.
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
        return try body()
    }
}

/// Writes an executable script at `path` through a short-lived shell, not through a file this
/// process opens: a child that another test spawns while this process holds the file open for
/// writing would inherit that descriptor, and executing the script would then fail with
/// ETXTBSY ("text file busy") for as long as that child lives.
public func writeExecutable(_ text: String, to path: String) throws {
    try runCommand("/bin/sh", ["-c", "printf '%s' \"$0\" > \"$1\" && chmod 755 \"$1\"", text, path], timeout: .seconds(30))
}
