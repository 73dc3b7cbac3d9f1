@testable import Raft

/// The clients of the simulation and what they saw: each operation's call and return on one
/// clock, for the linearizability checker.
struct ClientHistory {
    struct Operation {
        var key: UInt8
        var checked: LinearizabilityChecker.Operation
    }

    struct PendingRead {
        var operation: Int
        var replica: NodeID
        var context: UInt64
        var index: UInt64?
        var deadline: Int
    }

    /// Ticks a read may wait for its confirmation and its index, as the witness answers
    /// `noQuorum` after one election timeout (here with margin); a read that gives up returned
    /// nothing and constrains nothing.
    static let readTimeoutTicks = 30
    static let keys: [UInt8] = [1, 2]

    var clock = 0
    var operations: [Operation] = []
    /// Writes waiting to be applied, by the index and term their leader gave them.
    var writesInFlight: [UInt64: [(term: UInt64, operation: Int)]] = [:]
    /// Operations that can no longer take effect (their entry was replaced): left out.
    var discarded: Set<Int> = []
    var reads: [PendingRead] = []
    var nextValue: UInt64 = 0
    var nextContext: UInt64 = 0

    mutating func tickClock() -> Int {
        clock += 1
        return clock
    }

    mutating func writeCalled(key: UInt8, value: UInt64, index: UInt64, term: UInt64) {
        operations.append(Operation(key: key, checked: .init(kind: .write, value: value, call: tickClock(), returned: .max)))
        writesInFlight[index, default: []].append((term, operations.count - 1))
    }

    /// An entry was applied somewhere: a write proposed at its index returns if it is this very
    /// entry (same term), and can never take effect otherwise. Returns how many writes returned.
    mutating func applied(_ entry: Entry) -> Int {
        guard let waiting = writesInFlight.removeValue(forKey: entry.index) else { return 0 }
        var returned = 0
        for write in waiting {
            if write.term == entry.term {
                operations[write.operation].checked.returned = tickClock()
                returned += 1
            } else {
                discarded.insert(write.operation)
            }
        }
        return returned
    }

    mutating func readCalled(key: UInt8, replica: NodeID, context: UInt64, deadline: Int) {
        operations.append(Operation(key: key, checked: .init(kind: .read, value: 0, call: tickClock(), returned: .max)))
        reads.append(PendingRead(operation: operations.count - 1, replica: replica, context: context, deadline: deadline))
    }

    mutating func readConfirmed(on replica: NodeID, _ read: ReadState) {
        guard let position = reads.firstIndex(where: { $0.replica == replica && $0.context == read.context }) else { return }
        reads[position].index = read.index
    }

    /// A crashed replica answers none of its reads.
    mutating func replicaCrashed(_ replica: NodeID) {
        for read in reads where read.replica == replica { discarded.insert(read.operation) }
        reads.removeAll { $0.replica == replica }
    }

    /// The history of each key, without the operations that returned nothing: reads not
    /// answered (yet) and writes whose entry was replaced. A write not applied yet stays, with
    /// an unknown outcome.
    func histories() -> [UInt8: [LinearizabilityChecker.Operation]] {
        var result: [UInt8: [LinearizabilityChecker.Operation]] = [:]
        for (position, operation) in operations.enumerated() where !discarded.contains(position) {
            if operation.checked.kind == .read && operation.checked.returned == .max { continue }
            result[operation.key, default: []].append(operation.checked)
        }
        return result
    }
}

extension Simulation {
    /// Clients call at random: a write through a replica that thinks it leads (a deposed
    /// leader too: its write is lost or, if it was replicated, commits later), a read through
    /// any replica that is up.
    mutating func injectClientRequests() throws {
        if roll(250), let leaderID = pick(ids.filter { replicas[$0]!.raft?.role == .leader }),
            let key = pick(ClientHistory.keys)
        {
            clients.nextValue += 1
            let value = clients.nextValue
            if let index = try? replicas[leaderID]!.raft!.propose(StateMachine.write(key: key, value: value)) {
                clients.writeCalled(key: key, value: value, index: index, term: replicas[leaderID]!.raft!.term)
            }
        }
        // Half the reads go to a replica that thinks it leads (a deposed one included): that is
        // where a read without a confirmed leadership would be stale.
        let leaders = ids.filter { replicas[$0]!.raft?.role == .leader }
        let readers = roll(500) && !leaders.isEmpty ? leaders : ids.filter { replicas[$0]!.isUp }
        if roll(400), let replicaID = pick(readers), let key = pick(ClientHistory.keys) {
            clients.nextContext += 1
            let context = clients.nextContext
            // Half of them may wait for the next regular heartbeat (a witness stream's periodic
            // confirmation): a round that sends nothing of its own must be as safe.
            if (try? replicas[replicaID]!.raft!.readIndex(context: context, prompt: roll(500))) != nil {
                clients.readCalled(key: key, replica: replicaID, context: context, deadline: now + ClientHistory.readTimeoutTicks)
            }
        }
    }

    /// Answers every confirmed read whose replica has applied up to the read index, with the
    /// register as that replica has it now; gives up on reads past their deadline.
    mutating func serveConfirmedReads() {
        var waiting: [ClientHistory.PendingRead] = []
        for read in clients.reads {
            if let index = read.index, let replica = replicas[read.replica], replica.isUp,
                replica.stateMachine.appliedIndex >= index
            {
                let key = clients.operations[read.operation].key
                clients.operations[read.operation].checked.value = replica.stateMachine.registers[key] ?? 0
                clients.operations[read.operation].checked.returned = clients.tickClock()
                statistics.readsServed += 1
            } else if now >= read.deadline {
                clients.discarded.insert(read.operation)
            } else {
                waiting.append(read)
            }
        }
        clients.reads = waiting
    }

    /// Every key's history of writes and reads is linearizable.
    func checkLinearizability() throws {
        for (key, history) in clients.histories().sorted(by: { $0.key < $1.key }) {
            guard LinearizabilityChecker.isLinearizable(history) else {
                let lines = history.sorted { $0.call < $1.call }.map { operation in
                    "\(operation.kind) \(operation.value) [\(operation.call), \(operation.returned == .max ? "?" : String(operation.returned))]"
                }
                throw failure("linearizability: the history of key \(key) has no legal order:\n" + lines.joined(separator: "\n"))
            }
        }
    }
}
