import EventLog
import Foundation
import Logging
import NodeControl
import Synchronization

/// The role a load balancer or an application cares about, from the state a node reached: the
/// hook (`RoleChangeHook`) runs when it changes, like Patroni's `on_role_change`.
public enum NodeRole: String, Sendable, Equatable {
    case primary
    case replica
    case stopped

    /// Nil for the states a node passes through on its way to a role (an election, a clone,
    /// maintenance being prepared): the role does not change there.
    public init?(reached state: NodeState) {
        switch state {
        case .single, .waitPrimary, .primary, .applySettings: self = .primary
        case .secondary, .catchingUp: self = .replica
        case .demoted, .demoteTimeout, .maintenance, .dropped: self = .stopped
        case .initial, .draining, .preparePromotion, .stopReplication, .waitStandby, .reportLSN, .fastForward, .joinSecondary,
            .prepareMaintenance, .waitMaintenance:
            return nil
        }
    }
}

/// Runs the operator's command when the node's role changes: `/bin/sh -c COMMAND` with the
/// node, the old and new role, the timeline and the formation in its environment. It runs on
/// a thread of its own and nothing waits for it, so a slow or failing hook never delays a
/// failover; one still running after `timeout` is killed. Its output and its end are logged.
final class RoleChangeHook: Sendable {
    let command: String
    let timeout: Duration
    private let logger: Logger
    /// The role the hook last ran for (nil: none yet).
    private let lastRole = Mutex<NodeRole?>(nil)

    init(command: String, timeout: Duration, logger: Logger) {
        self.command = command
        self.timeout = timeout
        self.logger = logger
    }

    /// The node reached `reached`: runs the hook if that changes its role.
    func reached(_ reached: NodeState, node: NodeRegistration, timeline: UInt32, formation: String) {
        guard let role = NodeRole(reached: reached) else { return }
        let old = lastRole.withLock { last -> NodeRole?? in
            guard last != role else { return .none }
            defer { last = role }
            return .some(last)
        }
        guard case .some(let previous) = old else { return }
        var environment = ProcessInfo.processInfo.environment
        environment["PGQUORUM_NODE"] = node.name
        environment["PGQUORUM_NODE_ID"] = String(node.node)
        environment["PGQUORUM_OLD_ROLE"] = previous?.rawValue ?? "none"
        environment["PGQUORUM_NEW_ROLE"] = role.rawValue
        environment["PGQUORUM_STATE"] = reached.rawValue
        environment["PGQUORUM_TIMELINE"] = String(timeline)
        environment["PGQUORUM_FORMATION"] = formation
        let (command, timeout, logger, hookEnvironment) = (self.command, self.timeout, self.logger, environment)
        let metadata: Logger.Metadata = ["old": "\(previous?.rawValue ?? "none")", "new": "\(role.rawValue)"]
        logger.info("running the role change hook", metadata: metadata)
        Thread.detachNewThread {
            do {
                let result = try runCommand("/bin/sh", ["-c", command], environment: hookEnvironment, timeout: timeout, check: false)
                var ended = metadata
                ended["termination"] = "\(result.termination)"
                ended["output"] = "\(result.output.suffix(2_000))"
                if result.termination == .exited(code: 0) {
                    logger.info("the role change hook ended", metadata: ended)
                } else {
                    logger.warning("the role change hook failed (the node goes on)", metadata: ended)
                }
            } catch {
                var failed = metadata
                failed["error"] = "\(error)"
                logger.warning("the role change hook did not end well (the node goes on)", metadata: failed)
            }
        }
    }
}
