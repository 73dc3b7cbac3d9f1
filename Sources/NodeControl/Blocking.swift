import Foundation

/// Runs blocking work (libpq calls, child programs such as initdb, pg_basebackup, pg_rewind)
/// on a thread of its own and waits for it without holding a thread of Swift's cooperative
/// pool. That pool has one thread per core — two on a small machine — so two blocking calls
/// made straight from async code stop every task of the process (a node manager's lease
/// check and heartbeats among them) until one returns.
public func blocking<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
    let result: Result<T, E> = await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: Result { () throws(E) -> T in try body() }) }
    }
    return try result.get()
}
