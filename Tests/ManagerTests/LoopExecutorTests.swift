import EventLog
import NIOPosix
import Testing

@testable import Manager

/// The manager's tasks on its event loop (`LoopExecutor`) and its wake signal: what the loops
/// of an idle manager rest on, so they must neither wake early nor sleep through news.
@Suite("the manager's event loop executor and wake signal")
struct LoopExecutorTests {
    @Test("tasks preferring the executor run on its loop; its sleep lasts as asked and ends early when the task is cancelled")
    func executorAndSleep() async throws {
        let executor = LoopExecutor(loop: MultiThreadedEventLoopGroup.singleton.next())
        let onLoop = await Task(executorPreference: executor) { executor.loop.inEventLoop }.value
        #expect(onLoop)
        let started = ContinuousClock.now
        await executor.sleep(for: .milliseconds(100))
        #expect(ContinuousClock.now - started >= .milliseconds(100))
        let sleeper = Task(executorPreference: executor) {
            let started = ContinuousClock.now
            await executor.sleep(for: .seconds(10))
            return ContinuousClock.now - started
        }
        try await Task.sleep(for: .milliseconds(50))
        sleeper.cancel()
        #expect(await sleeper.value < .seconds(2))
    }

    @Test("a wait ends at its timeout, at once after an earlier signal, and at a signal long before its timeout")
    func wakeSignal() async throws {
        let executor = LoopExecutor(loop: MultiThreadedEventLoopGroup.singleton.next())
        let signal = WakeSignal(loop: executor.loop)
        var started = ContinuousClock.now
        await signal.wait(timeout: .milliseconds(100))
        #expect(ContinuousClock.now - started >= .milliseconds(100))

        signal.signal()
        started = ContinuousClock.now
        await signal.wait(timeout: .seconds(10))
        #expect(ContinuousClock.now - started < .seconds(2))

        let waiter = Task(executorPreference: executor) {
            let started = ContinuousClock.now
            await signal.wait(timeout: .seconds(10))
            return ContinuousClock.now - started
        }
        try await Task.sleep(for: .milliseconds(100))
        signal.signal()
        #expect(await waiter.value < .seconds(2))
        // The signal was for that waiter: the next wait runs to its timeout.
        started = ContinuousClock.now
        await signal.wait(timeout: .milliseconds(50))
        #expect(ContinuousClock.now - started >= .milliseconds(50))
    }
}
