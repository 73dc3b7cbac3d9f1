import Logging
import NIOCore
import NIOPosix
import Raft
import Synchronization

/// The client of the witness quorum that node managers and the CLI use (DESIGN §1).
///
/// Appends, reports and membership changes go to the leader: the client follows a follower's
/// answer to the leader's address and retries across witnesses until `requestTimeout`, giving
/// each attempt at most `attemptTimeout` and trying a witness that just failed last. Every
/// append carries this client's id and a sequence number of its own, the same on every retry,
/// so a retry whose first attempt committed too is applied once (Raft thesis §6.3).
///
/// Reads and streams work from any witness and are linearizable: a witness answers once it has
/// applied what the leader committed when the read arrived, or says `noQuorum` within one
/// election timeout, and the client moves to the next witness at once. A stream follows one
/// witness and moves on, from where it stopped, when that witness loses the quorum, closes, or
/// sends nothing for `streamIdleTimeout`. Snapshots are served as they are: they are only a
/// starting point for the reads that follow.
public final class WitnessClient: Sendable {
    public let endpoints: [WitnessEndpoint]
    public let credentials: WitnessCredentials
    /// The certificate, key and CA of `credentials`, read again when they change.
    public let tls: TLSCredentials
    public let requestTimeout: Duration
    /// A stream that hears nothing for this long moves to another witness: a live witness in
    /// touch with the quorum pushes at least every half election timeout.
    public let streamIdleTimeout: Duration
    /// This client's identity for exactly-once requests: random, never 0.
    public let clientID: UInt64
    /// The next request's sequence number, and those sent and not yet answered or given up.
    private let sequences = Mutex<(next: UInt64, outstanding: Set<UInt64>)>((1, []))
    private let logger: Logger
    private let group: any EventLoopGroup
    /// When the client runs on one event loop (a node manager's), its own tasks (streams)
    /// run there too: a push is then handled on the thread that read it.
    private let executor: LoopExecutor?
    private let state = Mutex(State())

    private struct State {
        var connections: [WitnessEndpoint: WitnessConnection] = [:]
        /// The last witness known to lead.
        var leader: WitnessEndpoint?
        /// Witnesses whose last attempt failed, and when: tried after the others for a while.
        var failedAt: [WitnessEndpoint: ContinuousClock.Instant] = [:]
        var closed = false
    }

    /// How long a witness that failed an attempt is tried after the others.
    static let suspicion: Duration = .seconds(10)

    public init(
        endpoints: [WitnessEndpoint], credentials: WitnessCredentials, requestTimeout: Duration = .seconds(10),
        streamIdleTimeout: Duration = .seconds(3), logger: Logger = Logger(label: "pgquorum.witness-client"), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws {
        precondition(!endpoints.isEmpty, "a witness client needs at least one address")
        self.endpoints = endpoints
        self.credentials = credentials
        self.tls = try TLSCredentials(credentials)
        self.requestTimeout = requestTimeout
        self.streamIdleTimeout = streamIdleTimeout
        self.clientID = UInt64.random(in: 1...UInt64.max)
        self.logger = logger
        self.group = group
        executor = (group as? any EventLoop).map(LoopExecutor.init(loop:))
    }

    /// Appends an event and returns its index once committed. Retried across witnesses and
    /// leader changes with one request id, it is applied once; the index returned is the one
    /// where it was applied.
    public func append(_ event: ClusterEvent, formation: String = EventRecord.defaultFormation) async throws -> UInt64 {
        let request = sequences.withLock { sequences in
            let sequence = sequences.next
            sequences.next += 1
            sequences.outstanding.insert(sequence)
            return RequestID(client: clientID, sequence: sequence, firstOutstanding: sequences.outstanding.min()!)
        }
        // Answered or given up: the witnesses may forget it once a later request says so.
        defer { sequences.withLock { _ = $0.outstanding.remove(request.sequence) } }
        let record = EventRecord(formation: formation, stamp: LogStamp(leaderClockNanos: 0, wallTimeMillis: 0), event: event, requestID: request)
        return try committedIndex(try await call(.append(record), leaderOnly: true))
    }

    /// Sends a node's report; returns the index of the coalesced entry holding it, once committed.
    public func report(_ report: NodeReport, formation: String = EventRecord.defaultFormation) async throws -> UInt64 {
        try committedIndex(try await call(.report(formation: formation, report), leaderOnly: true))
    }

    /// Committed entries from `from` on (at most `maxEntries`); empty when none is committed
    /// yet. Linearizable: they include everything committed before the call. `stale` takes
    /// what the first witness to answer has applied, however old (for diagnosis). Throws a
    /// `.compacted` failure when they were compacted into the snapshot.
    public func read(from: UInt64, maxEntries: UInt32 = 1_000, stale: Bool = false) async throws -> [CommittedEntry] {
        let response = try await call(.read(from: from, maxEntries: maxEntries, stale: stale), leaderOnly: false)
        guard case .entries(let entries) = response else { throw unexpected(response) }
        do { return try entries.map { entry throws(DecodingError) in try CommittedEntry(entry) } } catch {
            throw WitnessClientError.malformedResponse(endpoint: endpoints[0], reason: "\(error)")
        }
    }

    /// What a read of one formation's entries found.
    public struct FormationRead: Sendable, Equatable {
        /// The entries a reader of the formation needs (`EventRecord.concerns`), in log order.
        public var entries: [CommittedEntry]
        /// How far the witness looked: every entry up to here that is not in `entries`
        /// concerns other formations only. Below `from` when nothing is committed from there.
        public var through: UInt64
    }

    /// As `read(from:maxEntries:stale:)`, but only the entries a reader of `formation` needs:
    /// those of that formation, and those of none in particular (ticks, new terms,
    /// membership). The default formation's readers need every entry: for it, this is a
    /// plain read.
    public func read(formation: String, from: UInt64, maxEntries: UInt32 = 1_000, stale: Bool = false) async throws -> FormationRead {
        let response = try await call(.read(from: from, maxEntries: maxEntries, stale: stale, formation: formation), leaderOnly: false)
        let raw: [Entry]
        let through: UInt64
        switch response {
        case .entries(let entries):
            raw = entries
            through = entries.last?.index ?? max(from, 1) - 1
        case .filtered(let entries, let scanned):
            raw = entries
            through = scanned
        default:
            throw unexpected(response)
        }
        do {
            return FormationRead(entries: try raw.map { entry throws(DecodingError) in try CommittedEntry(entry) }, through: through)
        } catch {
            throw WitnessClientError.malformedResponse(endpoint: endpoints[0], reason: "\(error)")
        }
    }

    /// The latest snapshot of the witness that answers.
    public func snapshot() async throws -> WitnessSnapshot {
        let response = try await call(.snapshot, leaderOnly: false)
        guard case .snapshot(let snapshot) = response else { throw unexpected(response) }
        return snapshot
    }

    /// The status of one witness (`endpoint`), or of the first that answers.
    public func status(of endpoint: WitnessEndpoint? = nil) async throws -> WitnessStatus {
        let response = try await call(.status, leaderOnly: false, only: endpoint)
        guard case .status(let status) = response else { throw unexpected(response) }
        return status
    }

    /// Adds or removes a witness; returns once the membership change committed.
    public func changeMembership(_ change: MembershipRequest) async throws -> UInt64 {
        try committedIndex(try await call(.changeMembership(change), leaderOnly: true))
    }

    /// Closes every connection. Streams end on their own when their consumer stops.
    public func close() {
        let connections = state.withLock { state in
            state.closed = true
            defer { state.connections = [:] }
            return Array(state.connections.values)
        }
        for connection in connections { connection.close() }
    }

    // MARK: Streams

    /// What a stream delivers, in log order, each position exactly once.
    public enum StreamItem: Sendable, Equatable {
        /// Committed entries, contiguous with what came before.
        case entries([CommittedEntry])
        /// The entries up to the snapshot's index were compacted away: the consumer restarts
        /// from this state; entries from `index + 1` follow.
        case snapshot(WitnessSnapshot)
        /// A stream of one formation: the entries up to this index that it did not deliver
        /// concern other formations only; the next entry delivered comes after it.
        case skipped(through: UInt64)
    }

    /// Committed entries from `from` on, pushed as they commit, across witness failures and
    /// leader changes, until the consumer stops iterating. With `preferLeader`, each
    /// (re)subscription goes to the leader this client knows of, if it is not suspect: the
    /// leader applies an entry as it commits, a follower only once the next message from the
    /// leader says so (up to a Raft heartbeat later). With a `formation` other than the
    /// default one, only the entries its readers need come (as `read(formation:…)`), with
    /// `.skipped` for the stretches of other formations' entries in between.
    public func stream(from: UInt64, preferLeader: Bool = false, formation: String? = nil) -> AsyncThrowingStream<StreamItem, any Error> {
        let (stream, continuation) = AsyncThrowingStream<StreamItem, any Error>.makeStream()
        let filter = formation == EventRecord.defaultFormation ? nil : formation
        let task = Task(executorPreference: executor) { [self] in
            do {
                try await follow(from: max(from, 1), preferLeader: preferLeader, formation: filter, into: continuation)
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    private enum StreamEvent: Sendable {
        case response(WitnessResponse)
        case closed(String)
    }

    private func follow(
        from: UInt64, preferLeader: Bool, formation: String?, into continuation: AsyncThrowingStream<StreamItem, any Error>.Continuation
    ) async throws {
        var next = from
        while !Task.isCancelled {
            // A witness that failed lately goes last, the longest-failed first among those.
            let order = attemptOrder(leaderOnly: false)
            let leader = preferLeader ? state.withLock { $0.leader }.flatMap { leader in isSuspect(leader) ? nil : leader } : nil
            let endpoint = leader ?? order[0]
            let connection: WitnessConnection
            do {
                connection = try await WitnessConnection.connect(
                    to: endpoint, clusterID: credentials.clusterID, tls: tls, group: group, timeout: .seconds(2), logger: logger, linkTimeouts: linkTimeouts)
            } catch let error as WitnessClientError {
                if case .refused = error { throw error }
                suspect(endpoint)
                try await Task.sleep(for: .milliseconds(attemptOrder(leaderOnly: false).allSatisfy(isSuspect) ? 200 : 20))
                continue
            }
            let lastHeard = LastHeard()
            let (events, eventSink) = AsyncStream<StreamEvent>.makeStream()
            let subscribe = { (from: UInt64) in
                connection.subscribe(
                    from: from, formation: formation,
                    onResponse: { response in
                        lastHeard.touch()
                        eventSink.yield(.response(response))
                    },
                    onClose: { eventSink.yield(.closed($0)); eventSink.finish() })
            }
            subscribe(next)
            // A witness that hangs (stopped, or the path to it cut) sends nothing, not even the
            // empty push that follows each confirmation: leave it once it is quiet for too long.
            // It sleeps until the quiet would be too long, not in short polls: an idle stream
            // then costs no wakeup between the witness's pushes.
            let idleTimeout = streamIdleTimeout
            let watchdog = Task(executorPreference: executor) { [logger, executor] in
                while !Task.isCancelled {
                    let quiet = lastHeard.elapsed
                    if quiet <= idleTimeout {
                        let rest = idleTimeout - quiet + .milliseconds(1)
                        if let executor { await executor.sleep(for: rest) } else { try? await Task.sleep(for: rest) }
                        continue
                    }
                    logger.info("stream quiet for too long; following another witness", metadata: ["witness": "\(endpoint)"])
                    self.suspect(endpoint)
                    connection.close()
                    return
                }
            }
            await withTaskCancellationHandler {
                do {
                    for await event in events {
                        switch event {
                        case .closed(let reason):
                            logger.debug("stream connection closed", metadata: ["witness": "\(endpoint)", "reason": "\(reason)"])
                        case .response(.entries(let raw)):
                            let fresh = raw.filter { $0.index >= next }
                            guard let first = fresh.first else { continue }
                            guard first.index == next else {
                                throw WitnessClientError.malformedResponse(endpoint: endpoint, reason: "stream skipped from \(next) to \(first.index)")
                            }
                            let entries = try fresh.map { entry throws(DecodingError) in try CommittedEntry(entry) }
                            next = entries.last!.index + 1
                            continuation.yield(.entries(entries))
                        case .response(.filtered(let raw, let through)) where formation != nil:
                            // In log order, after what came before; gaps are other formations'.
                            let fresh = raw.filter { $0.index >= next }
                            guard zip(fresh, fresh.dropFirst()).allSatisfy({ $0.index < $1.index }), fresh.last.map({ $0.index <= through }) ?? true else {
                                throw WitnessClientError.malformedResponse(endpoint: endpoint, reason: "a filtered push out of order or past its end \(through)")
                            }
                            if !fresh.isEmpty {
                                let entries = try fresh.map { entry throws(DecodingError) in try CommittedEntry(entry) }
                                next = entries.last!.index + 1
                                continuation.yield(.entries(entries))
                            }
                            if through >= next {
                                next = through + 1
                                continuation.yield(.skipped(through: through))
                            }
                        case .response(.failure(let failure)) where failure.code == .compacted:
                            let response = try await connection.request(.snapshot, timeout: requestTimeout)
                            guard case .snapshot(let snapshot) = response else { throw unexpected(response) }
                            if snapshot.index >= next {
                                continuation.yield(.snapshot(snapshot))
                                next = snapshot.index + 1
                            }
                            subscribe(next)
                        case .response(.failure(let failure)) where failure.code == .noQuorum:
                            logger.debug("witness lost the quorum; following another", metadata: ["witness": "\(endpoint)", "next": "\(next)"])
                            suspect(endpoint)
                            connection.close()
                        case .response(let other):
                            logger.warning("unexpected stream response", metadata: ["witness": "\(endpoint)", "response": "\(other)"])
                            connection.close()
                        }
                    }
                } catch {
                    logger.warning("stream broke; reconnecting", metadata: ["witness": "\(endpoint)", "error": "\(error)"])
                    connection.close()
                }
            } onCancel: {
                connection.close()
            }
            watchdog.cancel()
            connection.close()
            if !Task.isCancelled { try? await Task.sleep(for: .milliseconds(20)) }
        }
        continuation.finish()
    }

    // MARK: Calls

    private func committedIndex(_ response: WitnessResponse) throws -> UInt64 {
        guard case .committed(let index, _) = response else { throw unexpected(response) }
        return index
    }

    private func unexpected(_ response: WitnessResponse) -> WitnessClientError {
        if case .failure(let failure) = response { return .failure(failure) }
        return .malformedResponse(endpoint: endpoints[0], reason: "unexpected answer \(response)")
    }

    private func connection(to endpoint: WitnessEndpoint) async throws -> WitnessConnection {
        if let existing = state.withLock({ $0.connections[endpoint] }), existing.isOpen { return existing }
        let connection = try await WitnessConnection.connect(
            to: endpoint, clusterID: credentials.clusterID, tls: tls, group: group, timeout: .seconds(2), logger: logger, linkTimeouts: linkTimeouts)
        // Concurrent callers may have connected meanwhile: keep one open connection per witness.
        let chosen = state.withLock { state -> WitnessConnection? in
            if state.closed { return nil }
            if let existing = state.connections[endpoint], existing.isOpen { return existing }
            state.connections[endpoint] = connection
            return connection
        }
        guard let chosen else {
            connection.close()
            throw WitnessClientError.connectionLost(endpoint: endpoint, reason: "the client was closed")
        }
        if chosen !== connection { connection.close() }
        return chosen
    }

    /// Drops `connection` after it failed (unless another one already replaced it).
    private func forget(_ endpoint: WitnessEndpoint, _ connection: WitnessConnection?) {
        let removed = state.withLock { state -> WitnessConnection? in
            guard let current = state.connections[endpoint], connection == nil || current === connection else { return nil }
            return state.connections.removeValue(forKey: endpoint)
        }
        removed?.close()
    }

    /// Whether a connection on which a request timed out is closed and redialled: when the
    /// witness has sent nothing on it for an attempt's time (see `call`).
    static func closesAfterTimeout(silentFor silence: Duration, attempt: Duration) -> Bool {
        silence >= attempt
    }

    /// How long one attempt at one witness may take: a third of the request's time, at least a
    /// second (a commit that waits for a slow disk is not a dead witness).
    public var attemptTimeout: Duration { max(.seconds(1), requestTimeout / 3) }

    /// A connection whose bytes go unacknowledged for an attempt's time (at least 2 s) is
    /// aborted by the kernel, so a path cut silently is noticed and redialled.
    private var linkTimeouts: LinkTimeouts {
        LinkTimeouts(userTimeoutMillis: max(2_000, Int(attemptTimeout.components.seconds * 1_000)))
    }

    /// The witnesses in the order to try them: any witness whose last attempt failed lately
    /// after the others — except that a `leaderOnly` request tries the known leader first
    /// (named by a redirect, it is the best guess whatever happened before).
    private func attemptOrder(leaderOnly: Bool) -> [WitnessEndpoint] {
        let now = ContinuousClock.now
        let (leader, failedAt) = state.withLock { ($0.leader, $0.failedAt) }
        let suspect = { (endpoint: WitnessEndpoint) in failedAt[endpoint].map { now - $0 < Self.suspicion } ?? false }
        let others = endpoints.filter { !(leaderOnly && $0 == leader) }
        let first = leaderOnly ? leader.map { [$0] } ?? [] : []
        // Among the suspects, the one that failed longest ago first: retries go round.
        return first + others.filter { !suspect($0) } + others.filter(suspect).sorted { failedAt[$0]! < failedAt[$1]! }
    }

    private func isSuspect(_ endpoint: WitnessEndpoint) -> Bool {
        state.withLock { $0.failedAt[endpoint] }.map { ContinuousClock.now - $0 < Self.suspicion } ?? false
    }

    /// Marks a witness as failed just now: tried after the others for a while.
    private func suspect(_ endpoint: WitnessEndpoint) {
        state.withLock { $0.failedAt[endpoint] = ContinuousClock.now }
    }

    /// Sends `request` to the leader (or any witness) until one answers or the time is up.
    private func call(_ request: WitnessRequest, leaderOnly: Bool, only: WitnessEndpoint? = nil) async throws -> WitnessResponse {
        let deadline = ContinuousClock.now + requestTimeout
        var problems: [WitnessEndpoint: String] = [:]
        var round = 0
        while ContinuousClock.now < deadline {
            let order = only.map { [$0] } ?? attemptOrder(leaderOnly: leaderOnly)
            var redirected = false
            attempts: for endpoint in order where ContinuousClock.now < deadline {
                var used: WitnessConnection?
                do {
                    let connection = try await connection(to: endpoint)
                    used = connection
                    // One witness that hangs (stopped, cut off, starved) gets a share of the
                    // time, not all of it: the others are tried before the budget runs out.
                    let response = try await connection.request(
                        request, timeout: max(.milliseconds(10), min(deadline - ContinuousClock.now, attemptTimeout)))
                    state.withLock { _ = $0.failedAt.removeValue(forKey: endpoint) }
                    guard case .failure(let failure) = response else {
                        if leaderOnly { state.withLock { $0.leader = endpoint } }
                        return response
                    }
                    switch failure.code {
                    case .notLeader:
                        problems[endpoint] = "not the leader"
                        if let text = failure.leaderAddress, let leader = try? WitnessEndpoint(parsing: text), leader != endpoint {
                            state.withLock { state in
                                state.leader = leader
                                state.failedAt.removeValue(forKey: leader)
                            }
                            redirected = true
                            break attempts
                        }
                    case .unavailable:
                        problems[endpoint] = failure.message
                    case .noQuorum:
                        // Cut off from the quorum: the next witness at once, this one last.
                        problems[endpoint] = failure.message
                        suspect(endpoint)
                    case .compacted, .refused, .badRequest, .forbidden:
                        throw WitnessClientError.failure(failure)
                    }
                } catch let error as WitnessClientError {
                    switch error {
                    case .refused, .failure: throw error
                    case .timedOut:
                        // Slow, hung, or the path to it cut: tried last for a while. A
                        // connection cut silently sits in TCP's retransmission back-off; after
                        // the heal the next request on it could wait tens of seconds, while a
                        // new one goes through at once: one that has sent nothing for an
                        // attempt's time is closed, and requests in flight on it fail over to a
                        // new connection the same way. One that was heard from lately (its
                        // handshake just ended, say, using up most of this attempt's time) is
                        // only slow, and kept: closing it would make every next attempt pay
                        // for a new handshake too, and on a loaded machine never get an answer.
                        problems[endpoint] = "\(error)"
                        suspect(endpoint)
                        if let used, !Self.closesAfterTimeout(silentFor: ContinuousClock.now - used.lastHeard, attempt: attemptTimeout) { break }
                        forget(endpoint, used)
                    default:
                        problems[endpoint] = "\(error)"
                        state.withLock { $0.failedAt[endpoint] = ContinuousClock.now }
                        forget(endpoint, used)
                    }
                }
            }
            round += 1
            try await Task.sleep(for: .milliseconds(redirected ? 2 : min(25 * round, 200)))
        }
        let tried = (only.map { [$0] } ?? endpoints).map { "\($0): \(problems[$0] ?? "no answer in time")" }
        if problems.isEmpty, let only { throw WitnessClientError.timedOut(endpoint: only, after: requestTimeout) }
        throw WitnessClientError.unreachable(tried)
    }
}

/// When a stream last heard from its witness.
private final class LastHeard: Sendable {
    private let instant = Mutex(ContinuousClock.now)

    func touch() { instant.withLock { $0 = .now } }

    var elapsed: Duration { ContinuousClock.now - instant.withLock { $0 } }
}
