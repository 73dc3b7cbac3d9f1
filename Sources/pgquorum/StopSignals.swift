import Dispatch
import Foundation

/// SIGTERM and SIGINT as events: each is turned into `event(signalName)` on the stream of
/// whoever listens, instead of ending the process. Cancel the returned sources when done.
func forwardStopSignals<Event: Sendable>(
    to sink: AsyncStream<Event>.Continuation, _ event: @escaping @Sendable (String) -> Event
) -> [any DispatchSourceSignal] {
    [SIGTERM, SIGINT].map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler { sink.yield(event(number == SIGTERM ? "SIGTERM" : "SIGINT")) }
        source.resume()
        return source
    }
}

/// SIGHUP (logrotate, a terminal that closed) calls `reload` instead of ending the process.
/// Cancel the returned source when done.
func onReloadSignal(_ reload: @escaping @Sendable () -> Void) -> any DispatchSourceSignal {
    signal(SIGHUP, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
    source.setEventHandler(handler: reload)
    source.resume()
    return source
}
