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
