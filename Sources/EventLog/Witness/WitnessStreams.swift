import NIOCore
import Raft

/// The witness's streams of committed entries (`subscribe`), kept linearizable: a stream's
/// first push waits for a read index confirmed after it was asked for, the witness confirms
/// again every half election timeout while streams are open, and a confirmation that fails
/// ends every stream with `noQuorum`, so a client never keeps following a witness that lost
/// the quorum for longer than about one and a half election timeouts. After each confirmation
/// a stream that got nothing since the last one gets an empty push: a client that hears
/// nothing for a while knows the witness (or the path to it) is gone, not just quiet.
///
/// A stream of one formation gets only the entries its readers need (`EventRecord.concerns`),
/// and no push when none of the new ones is; its empty pushes say how far the witness looked.
/// Streams that wait at the same index share one read of the log per pump, so a push of a few
/// new entries to every manager of every formation costs one read, not one per manager.
///
/// Confined to the witness's Raft loop.
final class WitnessStreams: @unchecked Sendable {
    private struct Subscriber {
        var channel: any Channel
        var requestID: UInt64
        var next: UInt64
        /// Nil, or the default formation: every entry.
        var formation: String?
        var subscribedNanos: UInt64
        var confirmed = false
        var pushedSinceConfirmation = false
    }

    /// The most batches one stream gets per pump, so one fast reader cannot starve the rest.
    static let batchesPerPumpMax = 8
    static let entriesPerPushMax: UInt32 = 2_000

    private unowned let replica: WitnessReplica
    private var subscribers: [ObjectIdentifier: Subscriber] = [:]
    private var confirmationInFlight = false
    private var lastConfirmationNanos: UInt64 = 0

    init(replica: WitnessReplica) {
        self.replica = replica
    }

    private var confirmationIntervalNanos: UInt64 { replica.readTimeoutNanos / 2 }

    func add(channel: any Channel, requestID: UInt64, from: UInt64, formation: String? = nil) {
        subscribers[ObjectIdentifier(channel)] = Subscriber(
            channel: channel, requestID: requestID, next: max(from, 1),
            formation: formation == EventRecord.defaultFormation ? nil : formation, subscribedNanos: replica.nowNanos())
        confirm()
    }

    func remove(_ channel: any Channel) {
        subscribers.removeValue(forKey: ObjectIdentifier(channel))
    }

    func tick() {
        guard !subscribers.isEmpty, replica.nowNanos() >= lastConfirmationNanos + confirmationIntervalNanos else { return }
        confirm(prompt: false)
    }

    /// When `tick` next has a confirmation to start, if streams are open and none is under
    /// way (the shell wakes then).
    var nextConfirmationNanos: UInt64? {
        subscribers.isEmpty || confirmationInFlight ? nil : lastConfirmationNanos + confirmationIntervalNanos
    }

    /// A new stream's first confirmation is prompt; the periodic ones ride on the leader's
    /// next append or regular heartbeat (no message of their own), and fail by the same
    /// deadline.
    private func confirm(prompt: Bool = true) {
        guard !confirmationInFlight else { return }
        confirmationInFlight = true
        let started = replica.nowNanos()
        replica.linearizableRead(prompt: prompt) { [unowned self] confirmed in
            self.confirmationInFlight = false
            guard confirmed else { return self.endAll() }
            self.lastConfirmationNanos = started
            var waiting = false
            for (key, subscriber) in self.subscribers {
                if subscriber.subscribedNanos <= started {
                    self.subscribers[key]?.confirmed = true
                } else {
                    waiting = true
                }
            }
            self.pump(keepAlive: true)
            // A stream opened while this round was under way needs a round of its own.
            if waiting { self.confirm() }
        }
    }

    /// This witness could not confirm it is in touch with the quorum: every stream ends, and
    /// its client resubscribes at another witness from where it stopped.
    private func endAll() {
        let failure = WitnessFailure(
            .noQuorum, "witness \(replica.configuration.id) lost contact with the quorum; follow another witness",
            leaderAddress: replica.address(of: replica.node.leader))
        for subscriber in subscribers.values { push(.failure(failure), to: subscriber) }
        subscribers = [:]
    }

    /// Pushes what each confirmed stream has not had yet, as far as its connection takes it.
    func pump(keepAlive: Bool = false) {
        let applied = replica.applied
        // One read of the log per index that streams wait at, in this pump.
        var reads: [UInt64: Result<[Entry], WitnessFailure>] = [:]
        for (key, subscriber) in subscribers where subscriber.confirmed {
            var subscriber = subscriber
            if keepAlive && !subscriber.pushedSinceConfirmation && subscriber.next > applied {
                push(subscriber.formation == nil ? .entries([]) : .filtered([], through: subscriber.next - 1), to: subscriber)
            }
            if keepAlive { subscriber.pushedSinceConfirmation = false }
            var batches = 0
            while subscriber.next <= applied && subscriber.channel.isWritable && batches < Self.batchesPerPumpMax {
                let from = subscriber.next
                let read = reads[from] ?? replica.rawEntries(from: from, maxEntries: Self.entriesPerPushMax)
                reads[from] = read
                let response = WitnessReplica.response(for: read, from: from, formation: subscriber.formation)
                switch response {
                case .entries(let entries) where !entries.isEmpty:
                    push(response, to: subscriber)
                    subscriber.pushedSinceConfirmation = true
                    subscriber.next = entries.last!.index + 1
                case .filtered(let entries, let through) where through >= from:
                    if !entries.isEmpty {
                        push(response, to: subscriber)
                        subscriber.pushedSinceConfirmation = true
                    }
                    subscriber.next = through + 1
                default:
                    // Compacted, or the read failed: the client starts over.
                    push(response, to: subscriber)
                    subscribers.removeValue(forKey: key)
                }
                guard subscribers[key] != nil else { break }
                batches += 1
            }
            if subscribers[key] != nil { subscribers[key] = subscriber }
        }
    }

    private func push(_ response: WitnessResponse, to subscriber: Subscriber) {
        let frame = Frame(kind: WitnessFrameKind.response.rawValue, payload: response.encoded(id: subscriber.requestID))
        subscriber.channel.writeAndFlush(WitnessChannelHandler.buffer(frame, allocator: subscriber.channel.allocator), promise: nil)
    }
}
