import EventLog
import Foundation
import Manager
import Synchronization
import TestSupport

/// Stand-ins for node managers (issue 8 brings the real ones): each registers its node, then
/// every 150 ms reports postgres up at a fixed LSN, and — in a loop of its own, so that a slow
/// read of the log on a busy machine never delays a heartbeat past the unhealthy timeout —
/// reports its goal as reached whenever it differs from the state it reached. A stand-in whose
/// goal is a primary's reports every other stand-in streaming to it, as a real primary's view
/// of healthy standbys would (without one, the reducer counts the standbys cut off once the
/// unhealthy timeout passes). They exercise the CLI against a real witness quorum and the real
/// reducer without PostgreSQL.
final class FakeManagers: Sendable {
    static let lsn: LSN = 10 << 20
    let client: WitnessClient
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let registered = Mutex<[PGNodeID]>([])

    init(client: WitnessClient) {
        self.client = client
    }

    func register(_ id: PGNodeID, name: String, port: UInt16) async throws {
        _ = try await client.append(
            .nodeRegistered(NodeRegistration(node: id, name: name, host: "127.0.0.1", port: port, systemIdentifier: 42)))
        registered.withLock { $0.append(id) }
        let client = self.client
        let reached = ReachedState()
        let follower = Task {
            while !Task.isCancelled {
                if let state = try? await ClusterLog.load(from: client), let node = state[id] {
                    if node.goal != node.reached, (try? await client.append(.stateReached(node: id, state: node.goal))) != nil {
                        reached.state.withLock { $0 = node.goal }
                    } else {
                        reached.state.withLock { $0 = node.reached }
                    }
                }
                try? await Task.sleep(for: .milliseconds(150))
            }
        }
        let heartbeat = Task {
            while !Task.isCancelled {
                let state = reached.state.withLock { $0 }
                if state != .dropped {
                    var report = NodeReport(
                        node: id, reachedState: state, postgresRunning: true, timeline: 1, flushLSN: Self.lsn, replayLSN: Self.lsn,
                        syncState: .quorum, sentAtNanos: DispatchTime.now().uptimeNanoseconds)
                    if [.single, .waitPrimary, .primary, .applySettings].contains(state) {
                        report.standbys = self.registered.withLock { $0 }.filter { $0 != id }.map {
                            StandbyView(node: $0, streaming: true, syncState: .quorum, flushLagBytes: 0, replyAgeMillis: 0)
                        }
                    }
                    _ = try? await client.report(report)
                }
                try? await Task.sleep(for: .milliseconds(150))
            }
        }
        tasks.withLock { $0 += [follower, heartbeat] }
    }

    func stop() async {
        let all = tasks.withLock { tasks in
            defer { tasks = [] }
            return tasks
        }
        for task in all {
            task.cancel()
            await task.value
        }
    }
}

/// The state a stand-in last saw acknowledged as reached, shared by its two loops.
private final class ReachedState: Sendable {
    let state = Mutex(NodeState.initial)
}
