/// A linearizability checker for one read/write register that starts at 0, after Wing & Gong
/// with Lowe's memoization (the algorithm Porcupine and Knossos use): search for an order of the
/// operations that respects real time (an operation that returned before another was called
/// comes first) and in which every read returns the latest write. Histories of several keys
/// are checked one key at a time (a register per key is P-compositional).
struct LinearizabilityChecker {
    struct Operation: Equatable {
        enum Kind: Equatable {
            case write
            case read
        }

        var kind: Kind
        /// The value written, or the value the read returned.
        var value: UInt64
        /// When the client called it and when it returned, on one clock shared by all clients.
        /// A write whose outcome is unknown returns at `Int.max`: it may take effect at any time
        /// after its call, or never.
        var call: Int
        var returned: Int
    }

    /// Whether some real-time-respecting order of `operations` explains every read.
    static func isLinearizable(_ operations: [Operation]) -> Bool {
        var search = Search(operations)
        return search.run()
    }

    /// One run of the search over a doubly linked list of call and return events.
    private struct Search {
        struct Event {
            var operation: Int
            var isCall: Bool
            var previous: Int
            var next: Int
        }

        struct Visited: Hashable {
            var linearized: [UInt64]
            var state: UInt64
        }

        let operations: [Operation]
        /// Events in time order after a head sentinel at 0; -1 ends the list.
        var events: [Event]
        var callEvent: [Int]
        var returnEvent: [Int]

        init(_ operations: [Operation]) {
            self.operations = operations
            var order: [(time: Int, tieBreak: Int, operation: Int, isCall: Bool)] = []
            for (position, operation) in operations.enumerated() {
                precondition(operation.call < operation.returned, "operation \(position) returns before it is called")
                order.append((operation.call, 0, position, true))
                order.append((operation.returned, 1, position, false))
            }
            order.sort { ($0.time, $0.tieBreak, $0.operation) < ($1.time, $1.tieBreak, $1.operation) }
            events = [Event(operation: -1, isCall: false, previous: -1, next: order.isEmpty ? -1 : 1)]
            callEvent = Array(repeating: 0, count: operations.count)
            returnEvent = Array(repeating: 0, count: operations.count)
            for (position, item) in order.enumerated() {
                let slot = position + 1
                events.append(Event(operation: item.operation, isCall: item.isCall, previous: slot - 1, next: slot == order.count ? -1 : slot + 1))
                if item.isCall { callEvent[item.operation] = slot } else { returnEvent[item.operation] = slot }
            }
        }

        mutating func run() -> Bool {
            var linearized = [UInt64](repeating: 0, count: (operations.count + 63) / 64)
            var visited: Set<Visited> = []
            var stack: [(operation: Int, stateBefore: UInt64)] = []
            var state: UInt64 = 0
            var cursor = events[0].next
            while events[0].next != -1 {
                guard cursor != -1 else { return false }
                let event = events[cursor]
                if event.isCall {
                    let operation = operations[event.operation]
                    let allowed = operation.kind == .write || operation.value == state
                    if allowed {
                        let next = operation.kind == .write ? operation.value : state
                        var candidate = linearized
                        candidate[event.operation / 64] |= 1 << UInt64(event.operation % 64)
                        if visited.insert(Visited(linearized: candidate, state: next)).inserted {
                            stack.append((event.operation, state))
                            state = next
                            linearized = candidate
                            lift(event.operation)
                            cursor = events[0].next
                            continue
                        }
                    }
                    cursor = event.next
                } else {
                    // The earliest pending return: something called before it must go back.
                    guard let (operation, stateBefore) = stack.popLast() else { return false }
                    state = stateBefore
                    linearized[operation / 64] &= ~(1 << UInt64(operation % 64))
                    unlift(operation)
                    cursor = events[callEvent[operation]].next
                }
            }
            return true
        }

        private mutating func remove(_ slot: Int) {
            let event = events[slot]
            events[event.previous].next = event.next
            if event.next != -1 { events[event.next].previous = event.previous }
        }

        private mutating func reinsert(_ slot: Int) {
            let event = events[slot]
            events[event.previous].next = slot
            if event.next != -1 { events[event.next].previous = slot }
        }

        private mutating func lift(_ operation: Int) {
            remove(callEvent[operation])
            remove(returnEvent[operation])
        }

        private mutating func unlift(_ operation: Int) {
            reinsert(returnEvent[operation])
            reinsert(callEvent[operation])
        }
    }
}
