import EventLog
import NodeControl

/// The decisions behind the primary's lease (DESIGN §5 rule 1) and the wait before a narrower
/// quorum (rule 3), as pure functions of what the manager observed: the node manager acts on
/// them, and the reducer simulation drives its simulated managers through the same code.
public enum LeaseRules {
    /// Nanoseconds of lease a committed report still grants, or nil once it ran out: the lease
    /// runs from the send time of the last report the witnesses committed.
    public static func remainingByReport(nowNanos: UInt64, lastAckedSentNanos: UInt64, leaseMillis: UInt32) -> UInt64? {
        let end = lastAckedSentNanos + UInt64(leaseMillis) * 1_000_000
        return nowNanos < end ? end - nowNanos : nil
    }

    /// After the lease ran out, what synchronous replication still grants: with `ANY k`,
    /// k ≥ 1, and k quorum standbys streaming from this primary whose last reply is younger
    /// than the lease, no election can complete before they stop following it, and then their
    /// replies age. Held until the k-th freshest reply is a lease old; nil when it is already
    /// (fence now). A standby cut off silently stays `streaming` in `pg_stat_replication`
    /// until `wal_sender_timeout`: its reply time tells the truth. Only connections at least
    /// `settledConnectionMillis` old count: the standby's manager, watching its WAL receiver
    /// with gaps shorter than that (`ReceiverWatch`), saw every such connection, so what it
    /// reports about when it stopped following holds for every reply that counts here.
    public static func remainingBySynchronousStandbys(
        _ peers: [ReplicationPeer], quorumNames: Set<String>, k: Int, leaseMillis: UInt32
    ) -> (remainingNanos: UInt64?, freshStandbys: Int) {
        let lease = UInt64(leaseMillis) * 1_000_000
        let ages = peers
            .filter {
                $0.state == "streaming" && ["quorum", "sync"].contains($0.syncState) && quorumNames.contains($0.applicationName)
                    && ($0.connectedMillis ?? 0) >= settledConnectionMillis
            }
            .compactMap(\.replyAgeMillis).map { $0 * 1_000_000 }.filter { $0 < lease }.sorted()
        guard k >= 1, ages.count >= k else { return (nil, ages.count) }
        return (lease - ages[k - 1], ages.count)
    }

    /// How old a standby's replication connection must be before its replies hold the
    /// primary (`remainingBySynchronousStandbys`): longer than `ReceiverWatch.gapNanos`, with
    /// room for clocks that run at slightly different rates.
    public static let settledConnectionMillis: UInt64 = 1_500

    /// How many of the `listed` standbys have flushed past `target`, and whether that is the
    /// k a narrower (or new) `synchronous_standby_names` needs before the primary may report
    /// it applied: a standby that left may have been the only one holding the latest
    /// acknowledged writes.
    public static func quorumHolds(_ peers: [ReplicationPeer], listed: Set<String>, k: Int, target: UInt64) -> (holds: Bool, holding: Int) {
        guard k > 0, !listed.isEmpty else { return (true, 0) }
        let holding = peers.filter { listed.contains($0.applicationName) && ($0.flushLSN ?? 0) >= target }.count
        return (holding >= k, holding)
    }

    /// `wal_sender_timeout` and `wal_receiver_timeout`: a replication link cut silently ends
    /// within a few leases (the lease check reads reply times and does not wait for it).
    public static func replicationTimeout(leaseMillis: UInt32) -> Duration {
        max(.seconds(3), .milliseconds(leaseMillis) * 2)
    }
}

extension StandbyView {
    /// A primary's view of its standbys for its report, from `pg_stat_replication` observed
    /// `observedMillisAgo` ago: a link cut one way shows only here.
    public static func primaryView(_ peers: [ReplicationPeer], currentLSN: UInt64, observedMillisAgo: UInt64) -> [StandbyView] {
        peers.prefix(NodeReport.standbysMax).compactMap { peer in
            guard let standby = ClusterState.node(ofApplicationName: peer.applicationName) else { return nil }
            let syncState: SyncState =
                switch peer.syncState {
                case "async": .async
                case "potential": .potential
                case "sync": .sync
                case "quorum": .quorum
                default: .unknown
                }
            let lag = peer.flushLSN.map { currentLSN > $0 ? currentLSN - $0 : 0 } ?? currentLSN
            let age = peer.replyAgeMillis.map { $0 + observedMillisAgo }
            return StandbyView(
                node: standby, streaming: peer.state == "streaming", syncState: syncState, flushLagBytes: lag,
                replyAgeMillis: age.map { UInt32(clamping: $0) } ?? UInt32.max)
        }
    }
}

/// A standby's watch of its own WAL receiver (`pg_stat_wal_receiver`), over the observations
/// its manager makes: since when, at the latest, the receiver has certainly had no connection
/// to its upstream. A run of observations that all found no receiver, each ending less than
/// `gapNanos` after the one before started, leaves no room for a connection that a primary
/// would count (`LeaseRules.settledConnectionMillis`): every reply such a connection carried
/// was sent before the run began. A standby reaching report_lsn freezes the run's start as
/// when it stopped following (`NodeReport.followingEndedMillisAgo`); a primary that crashed
/// took its connections with it, so the run starts at the crash, and the new primary need not
/// wait a lease after the election for the standbys' last replies to age (DESIGN §5 rule 1).
public struct ReceiverWatch: Sendable, Equatable {
    /// The longest a run may go between one observation's start and the next one's end.
    public static let gapNanos: UInt64 = 1_000_000_000

    /// When the first observation of the current run ended (monotonic clock), or nil while
    /// a receiver runs or nothing is known.
    public private(set) var downSinceNanos: UInt64?
    private var lastStartedNanos: UInt64 = 0

    public init() {}

    /// Notes an observation of postgres that started and ended at the given times, in the
    /// order they started: a standby without a WAL receiver extends the run (or begins one
    /// after too long a gap); a receiver in any state, or a primary, ends it.
    public mutating func observed(standbyWithoutReceiver: Bool, startedNanos: UInt64, finishedNanos: UInt64) {
        guard standbyWithoutReceiver else {
            downSinceNanos = nil
            return
        }
        if downSinceNanos == nil || finishedNanos > lastStartedNanos + Self.gapNanos {
            downSinceNanos = finishedNanos
        }
        lastStartedNanos = startedNanos
    }

    /// Nothing is known (postgres is not running): the run ends.
    public mutating func unknown() { downSinceNanos = nil }
}
