import EventLog
import Testing

@testable import Manager

@Suite("formation snapshots")
struct ClusterSnapshotTests {
    func state(registering ids: [PGNodeID]) -> ClusterState {
        var state = ClusterState()
        for (offset, id) in ids.enumerated() {
            let registration = NodeRegistration(node: id, name: "n\(offset)", host: "10.0.0.\(offset + 1)", port: 5432, systemIdentifier: 42)
            _ = state.apply(
                LogEntry(index: UInt64(offset + 1), term: 1, record: EventRecord(stamp: LogStamp(leaderClockNanos: 0, wallTimeMillis: 0), event: .nodeRegistered(registration))))
        }
        return state
    }

    @Test("the highest node id survives a snapshot, even once its node is gone")
    func highestNodeID() throws {
        var state = state(registering: [0, 0, 7])
        #expect(state.sortedNodes.map(\.id) == [1, 2, 7])
        state.remove(7)
        let restored = try ClusterState(snapshot: state.snapshotData())
        #expect(restored == state)
        #expect(restored.highestNodeID == 7)
    }

    @Test("a version 1 snapshot (before node ids were assigned) still loads; its highest id is its largest node id")
    func versionOne() throws {
        let state = state(registering: [3, 5])
        let current = state.snapshotData()
        // Version 1 is version 3 without the highest node id and the request sessions (empty
        // here: a count of 0), which follow the fields below.
        var prefix = ByteWriter()
        prefix.write(UInt8(3))
        prefix.write(state.formation)
        prefix.write(state.settings)
        prefix.write(state.appliedIndex)
        prefix.write(state.term)
        prefix.write(state.nowNanos)
        prefix.write(state.waitingReason ?? "")
        prefix.write(state.electionSyncStandbys)
        let offset = prefix.bytes.count
        #expect(Array(current[..<offset]) == prefix.bytes)
        var old = ByteWriter()
        old.write(UInt8(1))
        old.writeRaw(Array(current[1..<offset]))
        old.writeRaw(Array(current[(offset + 8)..<(current.count - 4)]))
        old.appendChecksum()
        let restored = try ClusterState(snapshot: old.bytes)
        #expect(restored == state)
        #expect(restored.highestNodeID == 5)
    }

    @Test("a late retry of a settings change does not undo the change made after it, also for a reader that starts from a snapshot")
    func retriedRequestAppliesOnce() throws {
        var state = state(registering: [1, 2])
        let request = RequestID(client: 99, sequence: 1)
        func settings(_ heartbeatMillis: UInt32, at index: UInt64, request: RequestID?) -> LogEntry {
            var settings = FormationSettings()
            settings.heartbeatIntervalMillis = heartbeatMillis
            return LogEntry(
                index: index, term: 1,
                record: EventRecord(stamp: LogStamp(leaderClockNanos: 0, wallTimeMillis: 5), event: .settingsChanged(settings), requestID: request))
        }
        state.apply(settings(700, at: 3, request: request))
        state.apply(settings(900, at: 4, request: RequestID(client: 98, sequence: 1)))
        var restored = try ClusterState(snapshot: state.snapshotData())
        #expect(restored == state)
        #expect(restored.requests.appliedIndex(of: request) == 3)
        // The first attempt's retry commits at 5, after the newer change: applied once, it stays 900.
        state.apply(settings(700, at: 5, request: request))
        restored.apply(settings(700, at: 5, request: request))
        #expect(state.settings.heartbeatIntervalMillis == 900)
        #expect(restored == state)
        // Without a request id the same entry is applied (entries of older clients).
        state.apply(settings(700, at: 6, request: nil))
        #expect(state.settings.heartbeatIntervalMillis == 700)
    }

    @Test("the replayed log marks a retry of an applied request, which changes nothing")
    func retryMarkedInSteps() {
        var state = ClusterState()
        var settings = FormationSettings()
        settings.heartbeatIntervalMillis = 700
        let request = RequestID(client: 5, sequence: 1)
        var steps: [ClusterLog.Step] = []
        for index in UInt64(1)...2 {
            let record = EventRecord(stamp: LogStamp(leaderClockNanos: 0, wallTimeMillis: 0), event: .settingsChanged(settings), requestID: request)
            ClusterLog.apply(CommittedEntry(index: index, term: 1, payload: .event(record)), to: &state) { steps.append($0) }
        }
        #expect(steps.map(\.retryOf) == [nil, 1])
    }
}
