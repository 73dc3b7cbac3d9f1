import Testing

/// The checker must accept what is linearizable and refuse what is not, or the simulation that
/// relies on it proves nothing.
@Suite("linearizability checker")
struct LinearizabilityCheckerTests {
    typealias Operation = LinearizabilityChecker.Operation

    func write(_ value: UInt64, _ call: Int, _ returned: Int = .max) -> Operation {
        Operation(kind: .write, value: value, call: call, returned: returned)
    }

    func read(_ value: UInt64, _ call: Int, _ returned: Int) -> Operation {
        Operation(kind: .read, value: value, call: call, returned: returned)
    }

    @Test("sequential histories: a read sees the latest write, never an older one")
    func sequential() {
        #expect(LinearizabilityChecker.isLinearizable([]))
        #expect(LinearizabilityChecker.isLinearizable([read(0, 1, 2)]))
        #expect(LinearizabilityChecker.isLinearizable([write(1, 1, 2), read(1, 3, 4)]))
        #expect(!LinearizabilityChecker.isLinearizable([write(1, 1, 2), read(0, 3, 4)]))
        #expect(!LinearizabilityChecker.isLinearizable([write(1, 1, 2), write(2, 3, 4), read(1, 5, 6)]))
        #expect(!LinearizabilityChecker.isLinearizable([read(5, 1, 2)]))
    }

    @Test("concurrent operations may take effect in either order")
    func concurrent() {
        // A read overlapping a write may see the value before or after it.
        #expect(LinearizabilityChecker.isLinearizable([write(1, 1, 4), read(0, 2, 3)]))
        #expect(LinearizabilityChecker.isLinearizable([write(1, 1, 4), read(1, 2, 3)]))
        // Two overlapping writes, then reads that settle on one order.
        #expect(LinearizabilityChecker.isLinearizable([write(1, 1, 4), write(2, 2, 5), read(1, 6, 7)]))
        #expect(LinearizabilityChecker.isLinearizable([write(1, 1, 4), write(2, 2, 5), read(2, 6, 7)]))
        // Once a read saw the new value, a later read must not see the old one (the stale
        // read a deposed leader would serve).
        #expect(!LinearizabilityChecker.isLinearizable([write(1, 1, 10), read(1, 2, 3), read(0, 4, 5)]))
        // Reads that disagree on the order of two writes cannot both be right.
        #expect(
            !LinearizabilityChecker.isLinearizable([
                write(1, 1, 4), write(2, 2, 5), read(1, 6, 7), read(2, 8, 9), read(1, 10, 11),
            ]))
    }

    @Test("a write with an unknown outcome may take effect late or never")
    func unknownOutcome() {
        #expect(LinearizabilityChecker.isLinearizable([write(1, 1), read(0, 2, 3), read(0, 10, 11)]))
        #expect(LinearizabilityChecker.isLinearizable([write(1, 1), read(0, 2, 3), read(1, 10, 11)]))
        #expect(!LinearizabilityChecker.isLinearizable([write(1, 1), read(1, 2, 3), read(0, 10, 11)]))
        // It cannot take effect before it was called.
        #expect(!LinearizabilityChecker.isLinearizable([read(1, 1, 2), write(1, 3)]))
    }

    @Test("long histories are checked quickly")
    func longHistory() {
        var operations: [Operation] = []
        var clock = 0
        for value in UInt64(1)...150 {
            operations.append(write(value, clock, clock + 3))
            operations.append(read(value - 1, clock + 1, clock + 2))
            operations.append(read(value, clock + 4, clock + 6))
            clock += 5
        }
        #expect(LinearizabilityChecker.isLinearizable(operations))
        operations.append(read(3, clock + 10, clock + 11))
        #expect(!LinearizabilityChecker.isLinearizable(operations))
    }
}
