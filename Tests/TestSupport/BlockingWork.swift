import Foundation

/// Runs blocking work (libpq calls that wait, for instance) on a thread of its own, so that
/// it neither occupies nor waits for a thread of Swift's cooperative pool — which tests share,
/// and which long CPU-bound tests (the simulations) can fill.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            do {
                continuation.resume(returning: try body())
            } catch {
                continuation.resume(throwing: error)
            }
        }
        thread.start()
    }
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
