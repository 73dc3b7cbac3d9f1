@testable import Raft

/// A safety property that did not hold, with the seed that replays it.
struct SimulationFailure: Error, CustomStringConvertible {
    var seed: UInt64
    var tick: Int
    var message: String
    var description: String { "seed \(seed), tick \(tick): \(message)" }
}

/// A deterministic simulation of a Raft cluster under faults (TigerBeetle VOPR style): one
/// seed decides everything — cluster size, fault rates, which messages are dropped, delayed
/// (a few ticks, or now and then for many, so that messages of old terms arrive late),
/// duplicated or reordered, partitions (both ways, or one direction of one link), crashes and
/// restarts, compactions, membership changes and leadership transfers. Replicas persist with the
/// witness's policy (a commit-index-only change waits for the next write; a leader's appends may
/// leave before its own write). Clients write registers through whichever replica thinks it
/// leads and read them through any replica with ReadIndex; their history must be linearizable.
/// Invariants are checked after every tick; then every fault is healed and the cluster must
/// elect a leader and commit a new proposal within a bound.
struct Simulation {
    struct Options {
        var faultTicks = 400
        var livenessTicks = 300
    }

    struct InFlight {
        var deliverAt: Int
        var sequence: Int
        var message: Message
    }

    let seed: UInt64
    let options: Options
    var rng: SeededGenerator
    var replicas: [NodeID: Replica] = [:]
    var ids: [NodeID] = []
    var network: [InFlight] = []
    var sequence = 0
    var now = 0
    /// Per-replica tick at which a crashed replica restarts.
    var restartAt: [NodeID: Int] = [:]
    /// Per-replica group; messages cross groups only when the partition is healed.
    var groupOf: [NodeID: Int] = [:]
    var partitionEndsAt = 0
    /// Directed links (from, to) that drop every message until `oneWayCutEndsAt`.
    var oneWayCuts: Set<[NodeID]> = []
    var oneWayCutEndsAt = 0
    var dropPercent: UInt64
    var duplicatePercent: UInt64
    var maxDelayTicks: Int
    var clients = ClientHistory()

    // What the checker has seen.
    var leaderOfTerm: [UInt64: NodeID] = [:]
    /// Per replica and term, the candidate it granted its vote to.
    var votesGranted: [VoteKey: NodeID] = [:]
    /// Every (index, term) ever persisted anywhere: the entry's hash and its predecessor's term.
    var seenEntries: [Key: (hash: UInt64, previousTerm: UInt64)] = [:]
    /// Every applied index: its term and the application hash after it.
    var appliedAt: [UInt64: (term: UInt64, hash: UInt64)] = [:]
    var proposals = 0
    var livenessMarker: [UInt8]?
    var livenessCommitted = false
    var statistics = Statistics()

    struct Key: Hashable {
        var index: UInt64
        var term: UInt64
    }

    struct VoteKey: Hashable {
        var replica: NodeID
        var term: UInt64
    }

    struct Statistics {
        var elections = 0
        var crashes = 0
        var partitions = 0
        var compactions = 0
        var snapshotsInstalled = 0
        var membershipChanges = 0
        var transfers = 0
        var committed: UInt64 = 0
        var learnersAdded = 0
        var oneWayCuts = 0
        var lateMessages = 0
        var writesAcknowledged = 0
        var readsServed = 0
    }


    init(seed: UInt64, options: Options = Options()) throws {
        self.seed = seed
        self.options = options
        rng = SeededGenerator(seed: seed)
        let founders = UInt64(rng.next() % 2 == 0 ? 3 : 5)
        // One spare replica starts empty, to be added by a membership change.
        ids = Array(1...(founders + 1))
        dropPercent = rng.next() % 20
        duplicatePercent = rng.next() % 10
        maxDelayTicks = Int(rng.next() % 4)
        for id in ids {
            var config = RaftConfig(id: id)
            config.electionTicks = 10
            config.heartbeatTicks = 2
            config.maxInflightMessages = 8
            config.maxMessageSizeBytes = 256
            let replica = Replica(id: id, config: config)
            if id <= founders { try RaftNode.bootstrap(storage: replica.storage, voters: Set(1...founders)) }
            try replica.start(seed: rng.next())
            replicas[id] = replica
            groupOf[id] = 0
        }
    }

    var founderCount: Int { ids.count - 1 }

    func failure(_ message: String) -> SimulationFailure {
        SimulationFailure(seed: seed, tick: now, message: message)
    }

    mutating func roll(_ perMille: UInt64) -> Bool {
        rng.next() % 1000 < perMille
    }

    mutating func pick<T>(_ items: [T]) -> T? {
        items.isEmpty ? nil : items[Int(rng.next() % UInt64(items.count))]
    }

    /// Runs the fault phase and then the liveness phase.
    mutating func run() throws {
        for _ in 0..<options.faultTicks {
            try injectFaults()
            try injectClientRequests()
            try step(faulty: true)
        }
        try heal()
        try checkLiveness()
        try checkLinearizability()
    }

    // MARK: - One tick

    mutating func step(faulty: Bool) throws {
        now += 1
        for id in ids where replicas[id]!.raft == nil {
            if let when = restartAt[id], when <= now {
                restartAt[id] = nil
                try replicas[id]!.start(seed: rng.next())
            }
        }
        for id in ids where replicas[id]!.isUp {
            // A shell may sleep through the ticks `ticksUntilTimerAction` says only count
            // (a witness does): such a tick must not change anything another input could see.
            let quiet = (replicas[id]!.raft!.ticksUntilTimerAction ?? .max) > 1
            let before = Self.timerVisible(replicas[id]!.raft!)
            try replicas[id]!.raft!.tick()
            if quiet && Self.timerVisible(replicas[id]!.raft!) != before {
                throw failure("replica \(id) acted on a tick that ticksUntilTimerAction said only counts")
            }
        }
        // Deliver what is due, in rounds, until the network is quiet for this tick.
        for round in 0..<200 {
            try processAll(faulty: faulty)
            let due = network.filter { $0.deliverAt <= now }.sorted { ($0.deliverAt, $0.sequence) < ($1.deliverAt, $1.sequence) }
            if due.isEmpty { break }
            network.removeAll { $0.deliverAt <= now }
            for flight in due { try deliver(flight.message) }
            precondition(round < 199, "seed \(seed): messages kept flowing within one tick")
        }
        serveConfirmedReads()
        try checkInvariants()
    }

    /// What a tick can change that the rest of the replica's life depends on, beside counters.
    private static func timerVisible(_ node: RaftNode) -> String {
        let progress = node.progress.keys.sorted().map { "\($0):\(node.progress[$0]!.state)" }
        return "\(node.role) \(node.term) \(node.leader.map(String.init) ?? "-") \(node.messages.count) \(node.transferee.map(String.init) ?? "-") \(progress)"
    }

    private mutating func processAll(faulty: Bool) throws {
        for id in ids {
            guard let replica = replicas[id], replica.isUp else { continue }
            if faulty && replica.raft!.hasReady() && roll(2) {
                // Crash before the ready batch reached the disk: it is lost entirely. A leader
                // may have sent its appends already (they may precede persistence).
                if roll(50) {
                    var node = replica.raft!
                    for message in try node.ready().messages where message.kind.isFromLeader { send(message, faulty: faulty) }
                }
                crash(id)
                continue
            }
            let (messages, events) = try replica.processReady()
            for event in events { try check(id, event) }
            for message in messages {
                try checkVote(message)
                send(message, faulty: faulty)
            }
        }
    }

    private mutating func send(_ message: Message, faulty: Bool) {
        if faulty {
            if groupOf[message.from] != groupOf[message.to] { return }
            if oneWayCuts.contains([message.from, message.to]) { return }
            if roll(dropPercent * 10) { return }
        }
        let copies = faulty && roll(duplicatePercent * 10) ? 2 : 1
        for _ in 0..<copies {
            var delay = faulty && maxDelayTicks > 0 ? Int(rng.next() % UInt64(maxDelayTicks + 1)) : (rng.next() % 2 == 0 ? 0 : 1)
            if faulty && roll(10) {
                // Held up for many election timeouts: it arrives from a term long past.
                delay = 20 + Int(rng.next() % 80)
                statistics.lateMessages += 1
            }
            sequence += 1
            // Ties are broken by a random sequence when delays reorder, by send order otherwise.
            network.append(InFlight(deliverAt: now + delay, sequence: faulty ? Int(rng.next() % 1_000_000) : sequence, message: message))
        }
    }

    private mutating func deliver(_ message: Message) throws {
        guard let replica = replicas[message.to], replica.isUp else { return }
        do {
            try replica.raft!.step(message)
        } catch let error as RaftError {
            if case .protocolViolation = error {
                // Duplicated and reordered messages are legal; none may break the protocol.
                throw failure("replica \(message.to) refused \(message): \(error)")
            }
            throw error
        }
    }

    // MARK: - Faults

    private mutating func injectFaults() throws {
        if now >= partitionEndsAt && ids.contains(where: { groupOf[$0] != 0 }) {
            for id in ids { groupOf[id] = 0 }
        }
        if roll(8) {
            // A partition into two random sides, lasting up to a few election timeouts.
            statistics.partitions += 1
            for id in ids { groupOf[id] = Int(rng.next() % 2) }
            partitionEndsAt = now + 10 + Int(rng.next() % 60)
        }
        if roll(6), let leaderID = ids.first(where: { replicas[$0]!.raft?.role == .leader }) {
            // The leader alone on one side: it leads on until check-quorum deposes it, while the
            // others may elect a new leader and commit (where a stale read would come from).
            statistics.partitions += 1
            for id in ids { groupOf[id] = id == leaderID ? 1 : 0 }
            partitionEndsAt = now + 20 + Int(rng.next() % 60)
        }
        if now >= oneWayCutEndsAt { oneWayCuts = [] }
        if roll(8), let from = pick(ids), let to = pick(ids.filter { $0 != from }) {
            // One direction of one link: `to` hears nothing from `from`, `from` hears `to`.
            statistics.oneWayCuts += 1
            oneWayCuts.insert([from, to])
            oneWayCutEndsAt = max(oneWayCutEndsAt, now + 10 + Int(rng.next() % 60))
        }
        let upIDs = ids.filter { replicas[$0]!.isUp }
        if roll(6), upIDs.count > 1, let victim = pick(upIDs) {
            crash(victim)
        }
        if roll(20), let id = pick(upIDs) {
            if try replicas[id]!.compact() { statistics.compactions += 1 }
        }
        guard let leaderID = ids.first(where: { replicas[$0]!.raft?.role == .leader }) else { return }
        if roll(300) {
            let count = 1 + Int(rng.next() % 3)
            let commands = (0..<count).map { _ -> [UInt8] in
                proposals += 1
                return Array("p\(proposals)".utf8)
            }
            _ = try? replicas[leaderID]!.raft!.propose(commands)
        }
        if roll(5) { try changeMembership(leaderID) }
        if roll(3) {
            let others = replicas[leaderID]!.raft!.membership.voters.filter { $0 != leaderID }.sorted()
            if let target = pick(others), (try? replicas[leaderID]!.raft!.transferLeadership(to: target)) != nil {
                statistics.transfers += 1
            }
        }
    }

    /// Adds a replica (as a learner, then promoted; or straight as a voter), or removes one.
    private mutating func changeMembership(_ leaderID: NodeID) throws {
        let membership = replicas[leaderID]!.raft!.membership
        let voters = membership.voters
        let change: MembershipChange?
        if let learner = pick(membership.learners.sorted()), rng.next() % 2 == 0 {
            change = .addVoter(learner)
        } else if voters.count > founderCount || (voters.count > 3 && rng.next() % 2 == 0) {
            change = pick(membership.members.sorted()).map { .removeVoter($0) }
        } else if let newcomer = pick(ids.filter { !membership.members.contains($0) }) {
            change = rng.next() % 2 == 0 ? .addLearner(newcomer) : .addVoter(newcomer)
        } else {
            change = nil
        }
        guard let change else { return }
        if (try? replicas[leaderID]!.raft!.proposeMembershipChange(change)) != nil {
            statistics.membershipChanges += 1
            if case .addLearner = change { statistics.learnersAdded += 1 }
        }
    }

    private mutating func crash(_ id: NodeID) {
        statistics.crashes += 1
        clients.replicaCrashed(id)
        replicas[id]!.crash()
        restartAt[id] = now + 5 + Int(rng.next() % 40)
    }

    private mutating func heal() throws {
        oneWayCuts = []
        for id in ids {
            groupOf[id] = 0
            if !replicas[id]!.isUp {
                restartAt[id] = nil
                try replicas[id]!.start(seed: rng.next())
            }
        }
    }

    // MARK: - Invariants

    private mutating func check(_ id: NodeID, _ event: ReplicaEvent) throws {
        switch event {
        case .softState(let soft, let term):
            guard soft.role == .leader else { return }
            statistics.elections += 1
            if let other = leaderOfTerm[term], other != id {
                throw failure("two leaders in term \(term): \(other) and \(id)")
            }
            leaderOfTerm[term] = id
            try checkLeaderCompleteness(id)
        case .persisted(let entries):
            let storage = replicas[id]!.storage
            for entry in entries {
                let previousTerm = try storage.term(at: entry.index - 1)
                let record = (hash: entryHash(entry), previousTerm: previousTerm)
                if let seen = seenEntries[Key(index: entry.index, term: entry.term)] {
                    guard seen.hash == record.hash, seen.previousTerm == record.previousTerm else {
                        throw failure("log matching: replica \(id) holds a different entry \(entry.term)/\(entry.index)")
                    }
                } else {
                    seenEntries[Key(index: entry.index, term: entry.term)] = record
                }
            }
        case .snapshotInstalled(let metadata, let hash):
            statistics.snapshotsInstalled += 1
            if let applied = appliedAt[metadata.index], applied.hash != hash || applied.term != metadata.term {
                throw failure("replica \(id) installed a snapshot at \(metadata.index) that differs from what was applied")
            }
        case .readState(let read):
            clients.readConfirmed(on: id, read)
        case .applied(let entry, let hash):
            statistics.writesAcknowledged += clients.applied(entry)
            if let applied = appliedAt[entry.index] {
                guard applied.term == entry.term, applied.hash == hash else {
                    throw failure("state machine safety: replica \(id) applied \(entry.term)/\(entry.index), others applied term \(applied.term)")
                }
            } else {
                if entry.data == livenessMarker { livenessCommitted = true }
                appliedAt[entry.index] = (entry.term, hash)
                statistics.committed = max(statistics.committed, entry.index)
            }
        }
    }

    /// A replica grants at most one vote per term (Raft paper §5.2), also across crashes: a
    /// vote forgotten by a restart could elect two leaders, though rarely enough that the
    /// two-leader check alone may not see it.
    private mutating func checkVote(_ message: Message) throws {
        guard message.kind == .voteResponse, !message.reject else { return }
        let key = VoteKey(replica: message.from, term: message.term)
        if let earlier = votesGranted[key], earlier != message.to {
            throw failure("replica \(message.from) voted for \(earlier) and for \(message.to) in term \(message.term)")
        }
        votesGranted[key] = message.to
    }

    /// A new leader's log holds every entry applied anywhere so far (leader completeness).
    private func checkLeaderCompleteness(_ id: NodeID) throws {
        let raft = replicas[id]!.raft!
        let snapshotIndex = try raft.log.firstIndex() - 1
        for (index, applied) in appliedAt where index > snapshotIndex {
            guard let term = try raft.log.term(index), term == applied.term else {
                throw failure("leader completeness: leader \(id) lacks committed entry \(applied.term)/\(index)")
            }
        }
    }

    private mutating func checkInvariants() throws {
        for id in ids {
            guard let raft = replicas[id]!.raft else { continue }
            if raft.role == .leader, let other = leaderOfTerm[raft.term], other != id {
                throw failure("two leaders in term \(raft.term): \(other) and \(id)")
            }
            let applied = replicas[id]!.stateMachine.appliedIndex
            guard raft.log.applied == applied, applied <= raft.log.committed else {
                throw failure("replica \(id) applied \(applied), core says \(raft.log.applied), commit \(raft.log.committed)")
            }
        }
    }

    private func entryHash(_ entry: Entry) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in entry.data + [entry.kind.rawValue] { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    // MARK: - Liveness

    /// With every fault healed, a leader is elected and a new proposal commits in bounded time.
    private mutating func checkLiveness() throws {
        let marker = Array("liveness-\(seed)".utf8)
        livenessMarker = marker
        var proposedInTerm: UInt64?
        for _ in 0..<options.livenessTicks {
            try step(faulty: false)
            if livenessCommitted { return }
            // Propose once to each new leader, until one of the proposals commits.
            if let leaderID = ids.first(where: { replicas[$0]!.raft!.role == .leader }),
                replicas[leaderID]!.raft!.term != proposedInTerm,
                (try? replicas[leaderID]!.raft!.propose(marker)) != nil
            {
                proposedInTerm = replicas[leaderID]!.raft!.term
            }
        }
        let states = ids.map { id in "\(id): \(replicas[id]!.raft!.status)" }.joined(separator: "\n")
        throw failure("no leader committed a new proposal within \(options.livenessTicks) ticks after healing:\n\(states)")
    }
}
