import ArgumentParser

/// The `pgquorum` command: a thin root whose subcommands each live in their own file.
@main
struct PGQuorum: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pgquorum",
        abstract: "High availability for PostgreSQL, decided by a quorum of witnesses.",
        discussion: """
            pgquorum keeps a PostgreSQL primary and its standbys available: three (or five) \
            witness processes replicate one event log with Raft, and a manager beside each \
            postgres replays that log to derive its goal role and drives postgres there.

            See README.md and docs/ in the source tree for the design and how to run it.
            """,
        version: PGQuorumVersion.current,
        subcommands: [
            StatusCommand.self, LogCommand.self, ShowCommand.self, SettingsCommand.self, PGCommand.self, SwitchoverCommand.self,
            MaintenanceCommand.self, DropCommand.self, DemoCommand.self, NodeCommand.self, WitnessCommand.self, PKICommand.self, FSMCommand.self,
        ]
    )
}
