import Testing

@testable import Raft

/// The witness's persistence policy (DESIGN §5 rule 4): only a change of the commit index alone
/// may wait; a term or a vote always reaches the disk before the messages that rely on it.
@Suite("commit-deferring persistence")
struct CommitDeferringPersistenceTests {
    func ready(hardState: HardState? = nil, entries: [Entry] = []) -> Ready {
        var ready = Ready()
        ready.hardState = hardState
        ready.entries = entries
        return ready
    }

    @Test("a commit-only change waits, and rides along with the next write")
    func commitWaits() {
        var policy = CommitDeferringPersistence(durable: HardState(term: 2, vote: 1, commit: 5))
        #expect(policy.plan(ready(hardState: HardState(term: 2, vote: 1, commit: 7))) == nil)
        #expect(policy.plan(ready()) == nil)
        let entry = Entry(term: 2, index: 8)
        #expect(
            policy.plan(ready(entries: [entry]))
                == PersistencePlan(hardState: HardState(term: 2, vote: 1, commit: 7), entries: [entry], snapshot: nil))
        #expect(policy.durableHardState == HardState(term: 2, vote: 1, commit: 7))
        #expect(policy.deferredHardState == nil)
    }

    @Test("a vote in the same term is written at once: a forgotten vote could be given twice")
    func voteIsWritten() {
        var policy = CommitDeferringPersistence(durable: HardState(term: 3, vote: nil, commit: 5))
        let voted = HardState(term: 3, vote: 2, commit: 5)
        #expect(policy.plan(ready(hardState: voted)) == PersistencePlan(hardState: voted, entries: [], snapshot: nil))
        #expect(policy.durableHardState == voted)
    }

    @Test("a new term is written at once, with the commit that waited")
    func termIsWritten() {
        var policy = CommitDeferringPersistence(durable: HardState(term: 3, vote: 2, commit: 5))
        #expect(policy.plan(ready(hardState: HardState(term: 3, vote: 2, commit: 6))) == nil)
        let newTerm = HardState(term: 4, vote: nil, commit: 6)
        #expect(policy.plan(ready(hardState: newTerm)) == PersistencePlan(hardState: newTerm, entries: [], snapshot: nil))
    }
}
