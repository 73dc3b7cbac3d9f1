import Synchronization
import Testing

@testable import EventLog

/// A witness connection's budget: requests waiting on the Raft loop, and answers not yet sent.
@Suite("witness connection budget")
struct RequestLimiterTests {
    @Test("at the request limit the connection pauses, and resumes once half the budget is answered")
    func requestBudget() {
        let limiter = RequestLimiter(limit: 4)
        let resumed = Mutex(0)
        for _ in 0..<4 { limiter.started() }
        #expect(limiter.isSaturated)
        limiter.pause { resumed.withLock { $0 += 1 } }
        limiter.finished()
        #expect(!limiter.isSaturated && resumed.withLock { $0 } == 0)
        limiter.finished()
        #expect(resumed.withLock { $0 } == 1)
        limiter.finished()
        #expect(resumed.withLock { $0 } == 1, "resumes once")
    }

    @Test("answers back up at the high mark and drain at the low mark, which is reported once")
    func unsentAnswers() {
        let limiter = RequestLimiter(unsentHigh: 1_000, unsentLow: 200)
        limiter.sending(600)
        #expect(!limiter.answersBacklogged)
        limiter.sending(400)
        #expect(limiter.answersBacklogged)
        #expect(!limiter.sent(600), "400 bytes are still above the low mark")
        #expect(limiter.answersBacklogged)
        limiter.sending(100)
        #expect(limiter.sent(300), "200 bytes: the backlog ends")
        #expect(!limiter.answersBacklogged)
        #expect(!limiter.sent(200), "no backlog to end")
    }
}
