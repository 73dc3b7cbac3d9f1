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
        // Version 1 is version 2 without the highest node id, which follows the fields below.
        var prefix = ByteWriter()
        prefix.write(UInt8(2))
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
        old.writeRaw(Array(current[(offset + 4)..<(current.count - 4)]))
        old.appendChecksum()
        let restored = try ClusterState(snapshot: old.bytes)
        #expect(restored == state)
        #expect(restored.highestNodeID == 5)
    }
}
