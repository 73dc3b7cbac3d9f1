#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import Raft

/// One witness's Raft replica and the state it applies: the Raft core, its LMDB storage and
/// persistence policy, the sequencer that stamps entries, what is applied (the application, the
/// witness address book, the request sessions, the membership in force), snapshots, proposals
/// and the requests waiting for their commit, and the linearizable reads waiting for their
/// read index.
///
/// Confined to the witness's Raft loop: every method is called there, so nothing is locked.
/// The shell (`WitnessServer`) feeds it messages, ticks and requests; it hands out messages to
/// send through `transport` and reports what it applied through `onApplied`.
final class WitnessReplica: @unchecked Sendable {
    typealias Reply = @Sendable (WitnessResponse) -> Void

    /// What the replica needs from the shell.
    struct Transport {
        /// Sends messages to peers (dropping those for peers that cannot take them now).
        var send: ([Message]) -> Void
        /// Entries were applied (subscribers may have something new).
        var onApplied: () -> Void
        /// The replica cannot go on safely (its storage failed).
        var onFatal: (String) -> Void
    }

    let configuration: WitnessConfiguration
    private let logger: Logger
    private let application: (any WitnessApplication)?
    /// The application's deadline the leader last ticked for (`tick`).
    private var lastDeadlineTicked: UInt64?
    /// When this witness last stored entries or a snapshot (its monotonic clock), for the
    /// `termStarted` entry it writes first when it becomes leader.
    private var lastStoredNanos: UInt64?
    private let transport: Transport
    private let metrics: WitnessMetrics
    /// The leader this witness last knew, for the leader-change count.
    private var knownLeader: NodeID?

    private(set) var storage: LMDBRaftStorage!
    private(set) var node: RaftNode!
    private var persistence = CommitDeferringPersistence(durable: HardState())
    private var sequencer = EventSequencer()
    private(set) var stopped = false
    private var ticks = 0

    // What is applied, up to `applied`.
    private(set) var applied: UInt64 = 0
    /// The membership in force at `applied`: what a snapshot taken there must record (Raft's
    /// own `membership` is the one at the commit index, which may be further on).
    private var appliedMembership = Membership()
    /// The address book from the log (witness id → address).
    private var loggedAddresses: [NodeID: String] = [:]
    /// Requests applied lately per client, so that a retry is answered with the first
    /// attempt's index instead of being applied again (Raft thesis §6.3).
    private var requests = RequestSessions()

    /// Requests answered once the entry at an index commits with the expected term.
    private var waiters: [UInt64: [(term: UInt64, reply: Reply)]] = [:]
    private var reportReplies: [EventSequencer.ReportToken: Reply] = [:]
    private var nextToken: EventSequencer.ReportToken = 1
    /// Stamped records waiting to be proposed together, with whoever waits for their commit.
    private var proposalQueue: [(data: [UInt8], replies: [Reply])] = []
    /// A snapshot taken at an index, to compact to once `keepEntries` more are applied.
    private var pendingSnapshot: (index: UInt64, membership: Membership, data: [UInt8])?
    /// Operators waiting for a learner's promotion to voter (`witness add`), by witness id.
    private var promotionWaiters: [NodeID: [Reply]] = [:]
    /// Linearizable reads: `true` once served from a confirmed, applied read index, `false`
    /// when this witness could not confirm one in time.
    private var reads = ReadGate<(Bool) -> Void>()

    init(configuration: WitnessConfiguration, application: (any WitnessApplication)?, logger: Logger, metrics: WitnessMetrics = WitnessMetrics(), transport: Transport) {
        self.configuration = configuration
        self.metrics = metrics
        self.application = application
        self.logger = logger
        self.transport = transport
    }

    /// How long a linearizable read may wait for its read index: one election timeout. A
    /// witness cut off from the quorum answers `noQuorum` after it, and the client moves on.
    var readTimeoutNanos: UInt64 { UInt64(configuration.electionTicks * configuration.tickMillis) * 1_000_000 }

    var isLeader: Bool { sequencer.leadingTerm != nil }

    // MARK: - Opening and stopping

    /// Opens the storage (bootstrapping a new cluster or waiting to join) and restores the
    /// application from the latest snapshot.
    func open() throws {
        var lmdb = LMDBConfiguration()
        lmdb.mapSizeBytesMax = configuration.mapSizeMaxBytes
        storage = try LMDBRaftStorage(directory: configuration.dataDirectory, configuration: lmdb)
        let (hardState, membership) = try storage.initialState()
        let isNew = try hardState == HardState() && membership.voters.isEmpty && storage.lastIndex() == 0
        if isNew && !configuration.join {
            let voters = Set(configuration.peers.keys)
            try RaftNode.bootstrap(storage: storage, voters: voters)
            logger.info("bootstrapped a new witness cluster", metadata: ["voters": "\(voters.sorted())"])
        } else if isNew {
            logger.info("waiting to be added to the witness cluster (witness add)")
        }
        let snapshot = try storage.snapshot()
        if !snapshot.data.isEmpty { try restore(snapshot.data) }
        appliedMembership = snapshot.metadata.membership
        var config = RaftConfig(id: configuration.id, seed: UInt64.random(in: 1...UInt64.max))
        config.electionTicks = configuration.electionTicks
        config.heartbeatTicks = configuration.heartbeatTicks
        config.applied = snapshot.metadata.index
        applied = snapshot.metadata.index
        // Read again: a bootstrap just wrote the founding hard state.
        persistence = CommitDeferringPersistence(durable: try storage.initialState().hardState)
        node = try RaftNode(config: config, storage: storage)
        let last = try storage.lastIndex()
        logger.info(
            "witness replica opened", metadata: ["term": "\(node.term)", "commit": "\(hardState.commit)", "last": "\(last)", "snapshot": "\(applied)"])
        metrics.firstIndex.record(try storage.firstIndex())
        publishMetrics()
        processReady()
    }

    /// Stops: every waiting request and read is answered `unavailable`, the storage closes.
    func stop() {
        stopped = true
        let failure = WitnessFailure(.unavailable, "the witness is shutting down; retry")
        for proposal in proposalQueue { for reply in proposal.replies { reply(.failure(failure)) } }
        proposalQueue = []
        for waiter in waiters.values.joined() { waiter.reply(.failure(failure)) }
        waiters = [:]
        for reply in reportReplies.values { reply(.failure(failure)) }
        reportReplies = [:]
        for reply in promotionWaiters.values.joined() { reply(.failure(failure)) }
        promotionWaiters = [:]
        for read in reads.removeAll() { read(false) }
        storage?.close()
    }

    /// If this witness leads, hands leadership to the most up-to-date peer; true when a
    /// transfer started.
    func handOverLeadership() -> Bool {
        guard !stopped, node.role == .leader else { return false }
        let status = node.status
        guard let target = status.peers.filter({ $0.key != configuration.id }).max(by: { $0.value.match < $1.value.match })?.key else { return false }
        do {
            try node.transferLeadership(to: target)
            processReady()
            logger.info("handing leadership over before stopping", metadata: ["to": "\(target)"])
            return true
        } catch {
            return false
        }
    }

    private func fatal(_ reason: String) {
        guard !stopped else { return }
        stopped = true
        logger.critical("\(reason)")
        transport.onFatal(reason)
    }

    // MARK: - Inputs

    func tick() {
        guard !stopped else { return }
        do { try node.tick() } catch { return fatal("Raft tick failed: \(error)") }
        ticks += 1
        if isLeader { sequence(flush: ticks % flushTicks == 0) }
        expireReads()
        if isLeader && !node.membership.learners.isEmpty { promoteCaughtUpLearners() }
    }

    /// Every how many ticks the leader flushes the coalesced reports (or appends an idle tick).
    private var flushTicks: Int {
        let flushMillis = min(configuration.sequencerTickMillis, application?.reportFlushIntervalMillis().map(Int.init) ?? .max)
        return max(1, flushMillis / configuration.tickMillis)
    }

    /// How many more ticks at the least before `tick()` does more than count (DESIGN §7: an
    /// idle witness does not wake for every tick): Raft's own timers, the leader's report
    /// flush, learners to promote. The shell adds the reads' deadlines and the streams'
    /// confirmations (`readDeadlineNanos`, `WitnessStreams.nextConfirmationNanos`).
    func ticksUntilTimerWork() -> Int {
        guard !stopped else { return .max }
        var until = node.ticksUntilTimerAction ?? .max
        if isLeader {
            // `tick()` flushes when the tick count it reaches is a multiple of `flushTicks`.
            until = min(until, flushTicks - ticks % flushTicks)
            if !node.membership.learners.isEmpty { until = 1 }
        }
        return max(1, until)
    }

    /// Answers `noQuorum` to the reads whose deadline passed.
    func expireReads() {
        for read in reads.expired(nowNanos: nowNanos()) { read(false) }
    }

    /// When the earliest waiting read times out (`expireReads` answers it then), if one waits.
    /// Past a thousand waiting reads, the next tick: the loop is busy with them anyway.
    func readDeadlineNanos() -> UInt64? {
        guard reads.count > 0 else { return nil }
        guard reads.count <= 1_000 else { return nowNanos() + UInt64(configuration.tickMillis) * 1_000_000 }
        return reads.earliestDeadlineNanos()
    }

    /// The leader's sequencer at this moment: coalesced reports flushed (or an idle tick) when
    /// `flush`, and at once when a deadline of the applied state passed (once per deadline),
    /// so that a failover or a promotion waiting on time is decided then, not at the next
    /// flush.
    private func sequence(flush: Bool) {
        let now = nowNanos()
        var deadline = false
        if let next = application?.nextDeadlineNanos(), next != lastDeadlineTicked, sequencer.leaderClockNanos(at: now) >= next {
            lastDeadlineTicked = next
            deadline = true
        }
        guard deadline || flush else { return }
        for proposal in sequencer.tick(nowNanos: now, wallTimeMillis: wallTimeMillis(), deadline: deadline) {
            propose(proposal.record, tokens: proposal.tokens)
        }
    }

    /// The leader: how long until the applied state's next deadline passes, on this witness's
    /// clock (0: it passed and is not ticked yet); nil when there is none, or this witness
    /// does not lead. The shell sets a timer for it (`deadlineReached`), so a deadline is met
    /// on time, not at the next Raft tick.
    func nanosUntilDeadline() -> UInt64? {
        guard !stopped, isLeader, let next = application?.nextDeadlineNanos(), next != lastDeadlineTicked else { return nil }
        let clock = sequencer.leaderClockNanos(at: nowNanos())
        return next > clock ? next - clock : 0
    }

    /// The timer of `nanosUntilDeadline` fired: a deadline that passed is ticked now.
    func deadlineReached() {
        guard !stopped, isLeader else { return }
        sequence(flush: false)
    }

    /// Hands a peer's message to Raft. A message that breaks the protocol is dropped; a storage
    /// failure is fatal, as in `tick` and `processReady`.
    func step(_ message: Message) {
        guard !stopped else { return }
        do {
            try node.step(message)
        } catch RaftError.storage(let reason) {
            fatal("the replica cannot go on: Raft storage failed: \(reason)")
        } catch {
            logger.warning("dropped a Raft message", metadata: ["error": "\(error)"])
        }
    }

    func reportUnreachable(_ peer: NodeID) {
        guard !stopped else { return }
        node.reportUnreachable(peer)
    }

    func reportSnapshot(to peer: NodeID, delivered: Bool) {
        guard !stopped else { return }
        node.reportSnapshot(to: peer, delivered: delivered)
    }

    // MARK: - Ready

    func processReady() {
        guard !stopped else { return }
        flushProposals()
        if let batch = reads.startBatch() {
            do {
                try node.readIndex(context: batch.context, prompt: batch.prompt)
            } catch {
                // No leader is known: this witness cannot confirm anything now.
                for read in reads.failedBatch(batch.context) { read(false) }
            }
        }
        var changed = false
        do {
            while node.hasReady() {
                let ready = try node.ready()
                changed = changed || ready.hardState != nil || ready.softState != nil || !ready.entries.isEmpty || !ready.committedEntries.isEmpty
                if let soft = ready.softState { leadershipChanged(soft) }
                // The leader's appends go out while its own disk write runs (thesis §10.2.1);
                // everything else promises what this write stores, so it waits for it.
                transport.send(ready.messages.filter { $0.kind.isFromLeader })
                if let plan = persistence.plan(ready) {
                    try storage.persist(hardState: plan.hardState, entries: plan.entries, snapshot: plan.snapshot)
                    if !plan.entries.isEmpty || plan.snapshot != nil { lastStoredNanos = nowNanos() }
                }
                transport.send(ready.messages.filter { !$0.kind.isFromLeader })
                if let snapshot = ready.snapshot { try installSnapshot(snapshot) }
                try apply(ready.committedEntries)
                for read in ready.readStates { reads.confirmed(read) }
                node.advance(ready)
            }
            try compactIfDue()
        } catch {
            return fatal("the replica cannot go on: \(error)")
        }
        for read in reads.served(applied: applied) { read(true) }
        transport.onApplied()
        if changed { publishMetrics() }
    }

    /// The Raft gauges (`WitnessMetrics`), set after a change: not at every heartbeat.
    private func publishMetrics() {
        metrics.term.record(node.term)
        metrics.isLeader.record(node.role == .leader ? 1 : 0)
        metrics.commitIndex.record(node.commitIndex)
        metrics.appliedIndex.record(applied)
        metrics.lastIndex.record(node.lastIndex)
    }

    private func leadershipChanged(_ soft: SoftState) {
        if let leader = soft.leader, leader != knownLeader { metrics.leaderChanges.increment() }
        knownLeader = soft.leader ?? knownLeader
        if soft.role == .leader {
            let now = nowNanos()
            sequencer.becameLeader(term: node.term, nowNanos: now)
            // Log time carries on across the change: every entry this witness holds was
            // stamped before it stored its last one (DESIGN §4).
            if let stored = lastStoredNanos, now >= stored,
                let record = try? sequencer.stamp(.termStarted(carriedNanos: now - stored), formation: EventRecord.defaultFormation, nowNanos: now, wallTimeMillis: wallTimeMillis())
            {
                proposalQueue.insert((record.encoded(), []), at: 0)
            }
            logger.info("became leader", metadata: ["term": "\(node.term)"])
        } else {
            if isLeader {
                for token in sequencer.steppedDown() {
                    reportReplies.removeValue(forKey: token)?(.failure(WitnessFailure(.notLeader, "leadership changed; report again", leaderAddress: address(of: soft.leader))))
                }
                // The next leader promotes caught-up learners too; the operator asks it again.
                for reply in promotionWaiters.values.joined() {
                    reply(.failure(WitnessFailure(.unavailable, "leadership changed while a new witness caught up; retry")))
                }
                promotionWaiters = [:]
            }
            logger.info("following", metadata: ["term": "\(node.term)", "leader": "\(soft.leader.map(String.init) ?? "none")"])
        }
    }

    // MARK: - Applying

    private func installSnapshot(_ snapshot: Snapshot) throws {
        try restore(snapshot.data)
        applied = snapshot.metadata.index
        appliedMembership = snapshot.metadata.membership
        pendingSnapshot = nil
        for index in waiters.keys where index <= applied {
            for waiter in waiters.removeValue(forKey: index) ?? [] {
                waiter.reply(.failure(WitnessFailure(.unavailable, "the outcome is unknown (a snapshot replaced the log); check and retry")))
            }
        }
        metrics.firstIndex.record(try storage.firstIndex())
        logger.info("installed a snapshot", metadata: ["index": "\(applied)"])
    }

    private func restore(_ data: [UInt8]) throws {
        let witnessData = try WitnessSnapshotData(decoding: data)
        loggedAddresses = Dictionary(witnessData.addresses.map { ($0.id, $0.address) }, uniquingKeysWith: { $1 })
        requests = witnessData.requests
        try application?.restore(from: witnessData.application)
    }

    private func apply(_ entries: [Entry]) throws {
        for entry in entries {
            var answer = WitnessResponse.committed(index: entry.index, term: entry.term)
            switch entry.kind {
            case .membershipChange:
                if let change = MembershipChange(encoded: entry.data) { appliedMembership = appliedMembership.applying(change) }
            case .normal where !entry.data.isEmpty:
                do {
                    let record = try EventRecord(decoding: entry.data)
                    if case .membershipChanged(let members) = record.event {
                        loggedAddresses = Dictionary(members.map { ($0.id, $0.address) }, uniquingKeysWith: { $1 })
                    }
                    if let request = record.requestID {
                        switch requests.admit(request, index: entry.index, wallTimeMillis: record.stamp.wallTimeMillis) {
                        case .new: break
                        case .duplicate(let original): answer = .committed(index: original, term: storage.termIfKnown(original))
                        case .expired:
                            answer = .failure(WitnessFailure(.refused, "request \(request) is older than its client's session remembers; its outcome is unknown"))
                        }
                    }
                    // The application skips duplicates itself: every reader of the log must.
                    application?.apply(LogEntry(index: entry.index, term: entry.term, record: record))
                } catch {
                    logger.error("committed entry does not decode; skipped", metadata: ["index": "\(entry.index)", "error": "\(error)"])
                }
            case .normal:
                break
            }
            applied = entry.index
            for waiter in waiters.removeValue(forKey: entry.index) ?? [] {
                waiter.reply(
                    waiter.term == entry.term
                        ? answer : .failure(WitnessFailure(.unavailable, "a new leader replaced the entry before it committed; retry")))
            }
            if entry.index % configuration.snapshotEntries == 0 && pendingSnapshot == nil {
                let data = WitnessSnapshotData(addresses: addressBook(), requests: requests, application: application?.snapshotData() ?? [])
                pendingSnapshot = (entry.index, appliedMembership, data.encoded())
            }
        }
    }

    private func compactIfDue() throws {
        guard let pending = pendingSnapshot, applied >= pending.index + configuration.keepEntries else { return }
        pendingSnapshot = nil
        guard pending.index >= (try storage.firstIndex()) else { return }
        try storage.compact(to: pending.index, membership: pending.membership, data: pending.data)
        metrics.snapshots.increment()
        metrics.firstIndex.record(try storage.firstIndex())
        logger.info("compacted the log", metadata: ["snapshot": "\(pending.index)"])
    }

    // MARK: - Requests

    /// Appends a client's event (leader only); answered once committed. A request this
    /// witness knows was applied already is answered with the index it went to.
    /// What the application says node `node` of `formation` is registered as.
    func registeredNodeName(formation: String, node: UInt32) -> String? {
        application?.registeredNodeName(formation: formation, node: node)
    }

    func append(_ record: EventRecord, reply: @escaping Reply) {
        switch record.event {
        case .nodeReports, .tick, .termStarted, .membershipChanged:
            return reply(.failure(WitnessFailure(.badRequest, "\(record.event.kindName) entries are written by the witnesses only")))
        default: break
        }
        guard isLeader else { return reply(.failure(failure(for: RaftError.notLeader(leader: node.leader)))) }
        if let request = record.requestID, let index = requests.appliedIndex(of: request) {
            return reply(.committed(index: index, term: storage.termIfKnown(index)))
        }
        do {
            var stamped = try sequencer.stamp(record.event, formation: record.formation, nowNanos: nowNanos(), wallTimeMillis: wallTimeMillis())
            stamped.requestID = record.requestID
            stamped.author = record.author
            propose(stamped, reply: reply)
        } catch {
            reply(.failure(failure(for: RaftError.notLeader(leader: node.leader))))
        }
    }

    /// Queues a node's report for the next coalesced entry (leader only).
    func report(_ report: NodeReport, formation: String, reply: @escaping Reply) {
        let token = nextToken
        nextToken += 1
        do {
            let news = try sequencer.submit(report, formation: formation, token: token)
            reportReplies[token] = reply
            if news {
                for proposal in sequencer.tick(nowNanos: nowNanos(), wallTimeMillis: wallTimeMillis()) {
                    propose(proposal.record, tokens: proposal.tokens)
                }
            }
        } catch .notLeader {
            reply(.failure(failure(for: RaftError.notLeader(leader: node.leader))))
        } catch {
            reply(.failure(WitnessFailure(.refused, error.description)))
        }
    }

    /// Runs `serve(true)` once this witness has applied a read index that the leader confirmed
    /// after this call (a linearizable read), or `serve(false)` after one election timeout
    /// without one (this witness is cut off from the quorum, or no leader is known). A read
    /// that is not `prompt` (a stream's periodic confirmation) is confirmed by the leader's
    /// next append or regular heartbeat instead of a round of its own.
    func linearizableRead(prompt: Bool = true, _ serve: @escaping (Bool) -> Void) {
        guard !stopped, reads.add(serve, deadlineNanos: nowNanos() + readTimeoutNanos, prompt: prompt) else { return serve(false) }
    }

    /// Committed entries from `from` on, at most `maxEntries`, as applied here.
    func entries(from: UInt64, maxEntries: UInt32, formation: String? = nil) -> WitnessResponse {
        Self.response(for: rawEntries(from: from, maxEntries: maxEntries), from: from, formation: formation)
    }

    /// Applied entries from `from` on (at most `maxEntries`, and at most 4 MiB of them).
    func rawEntries(from: UInt64, maxEntries: UInt32) -> Result<[Entry], WitnessFailure> {
        do {
            let first = try storage.firstIndex()
            let from = max(from, 1)
            if from < first {
                return .failure(WitnessFailure(.compacted, "entries before \(first) were compacted into a snapshot", snapshotIndex: first - 1))
            }
            guard from <= applied, maxEntries > 0 else { return .success([]) }
            let high = min(applied + 1, from + UInt64(maxEntries))
            return .success(try storage.entries(from: from, to: high, maxBytes: 4 << 20))
        } catch {
            return .failure(WitnessFailure(.refused, "reading the log failed: \(error)"))
        }
    }

    /// The answer to a read from `from` that found `entries`: all of them, or with a
    /// `formation` other than the default one, those its readers need and how far the scan
    /// went (when it found nothing, to just before `from`).
    static func response(for entries: Result<[Entry], WitnessFailure>, from: UInt64, formation: String?) -> WitnessResponse {
        switch entries {
        case .failure(let failure):
            return .failure(failure)
        case .success(let entries):
            guard let formation, formation != EventRecord.defaultFormation else { return .entries(entries) }
            let kept = entries.filter { $0.kind != .normal || $0.data.isEmpty || EventRecord.concerns($0.data, formation: formation) }
            return .filtered(kept, through: entries.last?.index ?? max(from, 1) - 1)
        }
    }

    func snapshotResponse() -> WitnessResponse {
        do {
            let snapshot = try storage.snapshot()
            let data = snapshot.data.isEmpty ? nil : try WitnessSnapshotData(decoding: snapshot.data)
            // Peers get a large snapshot in chunks; a client answer is one frame.
            guard (data?.application.count ?? 0) + (64 << 10) <= Frame.bytesMax else {
                return .failure(WitnessFailure(.refused, "the snapshot at \(snapshot.metadata.index) holds \(data!.application.count) bytes, more than one answer carries"))
            }
            return .snapshot(
                WitnessSnapshot(
                    index: snapshot.metadata.index, term: snapshot.metadata.term, voters: snapshot.metadata.membership.voters.sorted(),
                    addresses: data?.addresses ?? [], application: data?.application ?? []))
        } catch {
            return .failure(WitnessFailure(.refused, "reading the snapshot failed: \(error)"))
        }
    }

    func status() -> WitnessStatus {
        let status = node.status
        let members = status.membership.members.sorted().map { id in
            WitnessStatus.Member(
                id: id, address: address(of: id) ?? "unknown", match: status.peers[id]?.match, isLearner: status.membership.learners.contains(id))
        }
        return WitnessStatus(
            id: configuration.id, clusterID: configuration.credentials.clusterID, term: status.term, role: status.role.rawValue,
            leader: status.leader, leaderAddress: address(of: status.leader), commit: status.commit, applied: applied,
            firstIndex: (try? storage.firstIndex()) ?? 0, lastIndex: status.lastIndex, members: members)
    }

    /// Adds a witness as a learner (it counts for no quorum while it catches up) and answers
    /// once it has been promoted to voter; or removes a witness. Asking again to add a witness
    /// that is still a learner waits for the same promotion.
    func changeMembership(_ change: MembershipRequest, author: String? = nil, reply: @escaping Reply) {
        guard isLeader else { return reply(.failure(failure(for: RaftError.notLeader(leader: node.leader)))) }
        var book = addressBook()
        let raftChange: MembershipChange
        let membership = node.membership
        switch change {
        case .add(let id, let address):
            guard !membership.voters.contains(id) else { return reply(.failure(WitnessFailure(.refused, "witness \(id) is already a member"))) }
            do { _ = try WitnessEndpoint(parsing: address) } catch { return reply(.failure(WitnessFailure(.badRequest, error.description))) }
            promotionWaiters[id, default: []].append(reply)
            if membership.learners.contains(id) { return }
            book.removeAll { $0.id == id }
            book.append(WitnessMember(id: id, address: address))
            raftChange = .addLearner(id)
        case .remove(let id):
            guard membership.members.contains(id) else { return reply(.failure(WitnessFailure(.refused, "witness \(id) is not a member"))) }
            guard !membership.voters.contains(id) || membership.voters.count > 1 else {
                return reply(.failure(WitnessFailure(.refused, "cannot remove the last witness")))
            }
            book.removeAll { $0.id == id }
            raftChange = .removeVoter(id)
        }
        flushProposals()
        do {
            // The address first, so every witness knows where the new member is by the time
            // the membership change takes effect.
            var record = try sequencer.stamp(
                .membershipChanged(book.sorted { $0.id < $1.id }), formation: EventRecord.defaultFormation, nowNanos: nowNanos(),
                wallTimeMillis: wallTimeMillis())
            // The log records which operator asked (`pgquorum log` shows it).
            record.author = author
            if case .addLearner = raftChange { _ = try node.propose(record.encoded()) }
            let index = try node.proposeMembershipChange(raftChange)
            if case .removeVoter = raftChange {
                waiters[index, default: []].append((node.term, reply))
                _ = try node.propose(record.encoded())
            }
            logger.info("proposed a membership change", metadata: ["change": "\(raftChange)", "index": "\(index)"])
        } catch {
            if case .add(let id, _) = change { promotionWaiters.removeValue(forKey: id) }
            reply(.failure(failure(for: error)))
        }
    }

    /// The most entries a learner may lag behind the commit index and still be promoted: it
    /// must not weaken the quorum it joins by needing a long catch-up first.
    static let promotionLagEntriesMax: UInt64 = 100

    /// Leader: proposes, one at a time, a learner whose log has caught up as a voter; whoever
    /// asked for it is answered once that commits.
    private func promoteCaughtUpLearners() {
        let status = node.status
        for learner in node.membership.learners.sorted() {
            guard let match = status.peers[learner]?.match, match + Self.promotionLagEntriesMax >= status.commit else { continue }
            // Refused while another change is in flight: tried again at the next tick.
            guard let index = try? node.proposeMembershipChange(.addVoter(learner)) else { return }
            logger.info("promoting a caught-up learner to voter", metadata: ["witness": "\(learner)", "index": "\(index)"])
            let replies = promotionWaiters.removeValue(forKey: learner) ?? []
            if !replies.isEmpty {
                waiters[index, default: []].append((node.term, { response in for reply in replies { reply(response) } }))
            }
            return
        }
    }

    // MARK: - Proposals

    /// Queues a record; queued records are proposed together at the next ready, so a burst of
    /// appends travels to the followers as one append message, not one each.
    private func propose(_ record: EventRecord, tokens: [EventSequencer.ReportToken] = [], reply: Reply? = nil) {
        var replies = tokens.compactMap { reportReplies.removeValue(forKey: $0) }
        if let reply { replies.append(reply) }
        proposalQueue.append((record.encoded(), replies))
    }

    private func flushProposals() {
        guard !proposalQueue.isEmpty else { return }
        let queue = proposalQueue
        proposalQueue = []
        do {
            let last = try node.propose(queue.map(\.data))
            let term = node.term
            for (offset, proposal) in queue.enumerated() where !proposal.replies.isEmpty {
                let replies = proposal.replies
                waiters[last - UInt64(queue.count - 1 - offset), default: []].append(
                    (term, { response in for reply in replies { reply(response) } }))
            }
        } catch {
            let failure = failure(for: error)
            for proposal in queue { for reply in proposal.replies { reply(.failure(failure)) } }
        }
    }

    /// How a refusal from Raft reaches the client. A leadership transfer is a passing state:
    /// the client retries (the request id makes that safe), it does not give up.
    func failure(for error: any Error) -> WitnessFailure {
        switch error as? RaftError {
        case .notLeader(let leader):
            return WitnessFailure(.notLeader, "witness \(configuration.id) is not the leader", leaderAddress: address(of: leader))
        case .transferInProgress(let transferee):
            return WitnessFailure(.unavailable, "leadership is being handed to witness \(transferee); retry", leaderAddress: address(of: transferee))
        case .membershipChangePending:
            // A new leader's first entry, or the previous change, commits within a round trip:
            // the client asks again.
            return WitnessFailure(.unavailable, "\(error); retry")
        case .some(let raftError):
            return WitnessFailure(.refused, raftError.description)
        case nil:
            return WitnessFailure(.refused, "\(error)")
        }
    }

    // MARK: - Addresses and time

    /// The witnesses' addresses: the log's book, completed by `--peers`.
    func addressBook() -> [WitnessMember] {
        var book = loggedAddresses
        for (id, endpoint) in configuration.peers where book[id] == nil { book[id] = endpoint.description }
        return book.sorted { $0.key < $1.key }.map { WitnessMember(id: $0.key, address: $0.value) }
    }

    func address(of id: NodeID?) -> String? {
        guard let id else { return nil }
        return loggedAddresses[id] ?? configuration.peers[id]?.description
    }

    func nowNanos() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    private func wallTimeMillis() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}

extension LMDBRaftStorage {
    /// The term of the entry at `index` for an answer, or 0 when it cannot be read (compacted
    /// away): the index is what the client needs, and applying must never fail on it.
    fileprivate func termIfKnown(_ index: UInt64) -> UInt64 {
        (try? term(at: index)) ?? 0
    }
}
