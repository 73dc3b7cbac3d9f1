import ArgumentParser
import Foundation

/// `pgquorum show systemd witness|node …`: a unit file for a production set-up.
struct ShowSystemdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "systemd",
        abstract: "Print a systemd unit for a witness or a node manager.",
        discussion: """
            The unit runs the process with Type=notify: it tells systemd when it is ready, and \
            with WatchdogSec it says it is alive from its own health check (a witness: its Raft \
            loop answers; a node manager: each round of its lease check), so systemd kills and \
            restarts one that hangs; a node's postgres dies with its manager. Save the output as \
            /etc/systemd/system/NAME.service, then `systemctl daemon-reload && systemctl enable \
            --now NAME`.
              pgquorum show systemd node --dir /var/lib/pgquorum/node > /etc/systemd/system/pgquorum-node.service
              pgquorum show systemd witness --id 1 --data /var/lib/pgquorum/witness --listen 10.0.0.1:7400 \\
                  --peers 1=10.0.0.1:7400,2=10.0.0.2:7400,3=10.0.0.3:7400 --credentials /etc/pgquorum/witness-1.credentials
            """
    )

    @Argument(help: ArgumentHelp("witness or node.", valueName: "kind"))
    var kind: String

    @Option(help: ArgumentHelp("node: the node's folder (from node create).", valueName: "dir"))
    var dir: String?

    @Option(help: "witness: its id.")
    var id: UInt64?

    @Option(help: ArgumentHelp("witness: its data folder.", valueName: "dir"))
    var data: String?

    @Option(help: ArgumentHelp("witness: the address it listens on.", valueName: "host:port"))
    var listen: String?

    @Option(help: ArgumentHelp("witness: every witness, 1=HOST:PORT,…", valueName: "peers"))
    var peers: String?

    @Option(help: ArgumentHelp("witness: its credentials file.", valueName: "file"))
    var credentials: String?

    @Option(help: ArgumentHelp("witness: serve Prometheus metrics at this address (`witness run --metrics`).", valueName: "host:port"))
    var metrics: String?

    @Option(help: "The user the service runs as (default: postgres for a node, pgquorum for a witness).")
    var user: String?

    @Option(help: "Seconds without a sign of life before systemd restarts the process (WatchdogSec).")
    var watchdogSeconds: Int = 10

    @Option(help: ArgumentHelp("The pgquorum executable (default: this one).", valueName: "path"))
    var executable: String?

    func validate() throws {
        switch kind {
        case "node":
            guard dir != nil else { throw ValidationError("a node's unit needs --dir") }
        case "witness":
            guard id != nil, data != nil, listen != nil, peers != nil, credentials != nil else {
                throw ValidationError("a witness's unit needs --id, --data, --listen, --peers and --credentials")
            }
        default:
            throw ValidationError("the kind must be witness or node, not \(kind)")
        }
        if kind == "node" && metrics != nil { throw ValidationError("--metrics is a witness's: a node manager serves /metrics beside its HTTP endpoints") }
        guard watchdogSeconds > 0 else { throw ValidationError("--watchdog-seconds must be positive") }
    }

    func run() throws {
        let program = executable ?? ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "/usr/local/bin/pgquorum")
        func absolute(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }
        let description: String
        let command: [String]
        let account: String
        if kind == "node" {
            let folder = absolute(dir!)
            description = "pgquorum node manager (\(folder))"
            command = [program, "node", "run", "--dir", folder]
            account = user ?? "postgres"
        } else {
            description = "pgquorum witness \(id!)"
            command = [program, "witness", "run", "--id", "\(id!)", "--data", absolute(data!), "--listen", listen!, "--peers", peers!,
                       "--credentials", absolute(credentials!)] + (metrics.map { ["--metrics", $0] } ?? [])
            account = user ?? "pgquorum"
        }
        print(
            """
            # \(description): save as /etc/systemd/system/pgquorum-\(kind).service
            [Unit]
            Description=\(description)
            After=network-online.target
            Wants=network-online.target

            [Service]
            Type=notify
            NotifyAccess=main
            User=\(account)
            ExecStart=\(command.map(quoted).joined(separator: " "))
            ExecReload=/bin/kill -HUP $MAINPID
            Restart=always
            RestartSec=2
            WatchdogSec=\(watchdogSeconds)
            TimeoutStopSec=90
            KillMode=mixed
            LimitNOFILE=65536

            [Install]
            WantedBy=multi-user.target
            """)
    }

    /// A systemd command-line word: quoted when it holds a space or a quote.
    private func quoted(_ word: String) -> String {
        guard word.contains(where: { $0 == " " || $0 == "\"" || $0 == "\\" }) else { return word }
        return "\"" + word.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
