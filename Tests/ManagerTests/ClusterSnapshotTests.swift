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

    /// A snapshot as versions 1 to 3 wrote it: no node indexes; version 1 also without the
    /// highest node id, versions 1 and 2 without the request sessions.
    func legacySnapshot(_ state: ClusterState, version: UInt8) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(version)
        writer.write(state.formation)
        writer.write(state.settings, format: 1)
        writer.write(state.appliedIndex)
        writer.write(state.term)
        writer.write(state.nowNanos)
        writer.write(state.waitingReason ?? "")
        writer.write(state.electionSyncStandbys)
        if version >= 2 { writer.write(state.highestNodeID) }
        if version >= 3 { writer.write(state.requests) }
        writer.write(UInt32(state.nodes.count))
        for node in state.sortedNodes {
            writer.write(node.registration)
            writer.write(node.reached.code)
            writer.write(node.goal.code)
            writer.write(node.goalReason)
            writer.write(node.lastReport != nil)
            if let report = node.lastReport { writer.write(report) }
            writer.write(node.lastHeardNanos)
            writer.write(node.postgresDownSinceNanos != nil)
            writer.write(node.postgresDownSinceNanos ?? 0)
            writer.write(node.electionLSN != nil)
            writer.write(node.electionLSN ?? 0)
            writer.write(Int64(node.priorityBoost))
        }
        writer.appendChecksum()
        return writer.bytes
    }

    @Test("a version 1 snapshot (before node ids were assigned) still loads; its highest id is its largest node id")
    func versionOne() throws {
        let state = state(registering: [3, 5])
        let restored = try ClusterState(snapshot: legacySnapshot(state, version: 1))
        var expected = state
        expected.nodes.updateAll { node in
            node.registeredIndex = 0
            node.goalIndex = 0
        }
        #expect(restored == expected)
        #expect(restored.highestNodeID == 5)
    }

    @Test("a snapshot keeps each node's registration and goal indexes; before version 4 they read as 0")
    func nodeIndexes() throws {
        let state = state(registering: [0, 0])
        #expect(state.sortedNodes.map(\.registeredIndex) == [1, 2])
        #expect(state.sortedNodes.map(\.goalIndex) == [1, 2])
        #expect(try ClusterState(snapshot: state.snapshotData()) == state)
        for version: UInt8 in [2, 3] {
            let restored = try ClusterState(snapshot: legacySnapshot(state, version: version))
            #expect(restored.sortedNodes.map(\.registeredIndex) == [0, 0])
            #expect(restored.sortedNodes.map(\.goalIndex) == [0, 0])
            #expect(restored.highestNodeID == 2)
        }
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

@Suite("every formation in one snapshot")
struct FormationStatesTests {
    func entry(_ index: UInt64, _ formation: String, _ event: ClusterEvent, term: UInt64 = 1) -> LogEntry {
        LogEntry(index: index, term: term, record: EventRecord(formation: formation, stamp: LogStamp(leaderClockNanos: index * 100_000_000, wallTimeMillis: 0), event: event))
    }

    func registration(_ name: String, _ host: String) -> ClusterEvent {
        .nodeRegistered(NodeRegistration(node: 0, name: name, host: host, port: 5432, systemIdentifier: 42))
    }

    @Test("formations keep their own nodes; the default one sees every entry; a snapshot restores all of them; a reader's replay after the snapshot agrees with one from the start")
    func roundTrip() throws {
        let entries = [
            entry(1, "default", registration("a", "10.0.0.1")),
            entry(2, "orders", registration("x", "10.0.1.1")),
            entry(3, "orders", registration("y", "10.0.1.2")),
            entry(4, "default", .tick),
            entry(5, "default", .termStarted(carriedNanos: 50_000_000), term: 2),
            entry(6, "orders", .operatorRequest(.setParameter(name: "work_mem", value: "8MB", node: nil)), term: 2),
            entry(7, "default", registration("b", "10.0.0.2"), term: 2),
        ]
        var formations = FormationStates()
        for entry in entries.prefix(5) { formations.apply(entry) }
        #expect(formations["default"]?.sortedNodes.map(\.registration.name) == ["a"])
        #expect(formations["orders"]?.sortedNodes.map(\.registration.name) == ["x", "y"])
        #expect(formations["default"]?.appliedIndex == 5)
        // The new term reached the other formation too.
        #expect(formations["orders"]?.term == 2)

        let restored = try FormationStates(snapshot: formations.snapshotData())
        #expect(restored == formations)

        // A reader of orders: from the snapshot plus the rest, as from the start.
        var fromSnapshot = restored["orders"]!
        fromSnapshot.appliedIndex = max(fromSnapshot.appliedIndex, 5)
        var fromStart = ClusterState(formation: "orders")
        for entry in entries.prefix(5) { fromStart.apply(entry) }
        for entry in entries.dropFirst(5) {
            fromSnapshot.apply(entry)
            fromStart.apply(entry)
        }
        #expect(fromSnapshot.sortedNodes == fromStart.sortedNodes)
        #expect(fromSnapshot.parameters == ["work_mem": "8MB"] && fromStart.parameters == ["work_mem": "8MB"])
        #expect(fromSnapshot.appliedIndex == 7)
    }

    @Test("the witness flushes reports at the shortest heartbeat interval of a formation with nodes")
    func shortestHeartbeat() {
        var fast = FormationSettings()
        fast.primaryLeaseMillis = 700
        fast.nodeUnhealthyTimeoutMillis = 1_200
        fast.heartbeatIntervalMillis = 200
        var formations = FormationStates()
        #expect(formations.shortestHeartbeatMillis == nil, "no nodes anywhere")
        formations.apply(entry(1, "default", registration("a", "10.0.0.1")))
        #expect(formations.shortestHeartbeatMillis == 300, "the default")
        fast.heartbeatIntervalMillis = 100
        formations.apply(entry(2, "empty", .settingsChanged(fast)))
        #expect(formations.shortestHeartbeatMillis == 300, "a formation without nodes does not count")
        fast.heartbeatIntervalMillis = 200
        formations.apply(entry(3, "orders", registration("x", "10.0.1.1")))
        formations.apply(entry(4, "orders", .settingsChanged(fast)))
        #expect(formations.shortestHeartbeatMillis == 200)
    }

    @Test("a snapshot of the default formation alone (older witnesses) still loads; a corrupt one is refused")
    func legacy() throws {
        var state = ClusterState()
        state.apply(entry(1, "default", registration("a", "10.0.0.1")))
        let restored = try FormationStates(snapshot: state.snapshotData())
        #expect(restored["default"] == state)
        var bytes = FormationStates().snapshotData()
        bytes[3] ^= 0xFF
        #expect(throws: DecodingError.self) { _ = try FormationStates(snapshot: bytes) }
    }
}
