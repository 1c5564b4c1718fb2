// Package nats is the dispatch driver that publishes job IDs to a NATS
// JetStream work-queue stream, from which `conveyor worker serve` processes
// on any number of machines pull them (internal/natsworker).
//
// One message per job: each job has its own subject, <subject>.<job ID>,
// and the stream keeps at most one message per subject, refusing a second
// one (discard-new per subject). A job already queued, or held unacked by
// a worker, is therefore coalesced, whatever the time between the two
// dispatches; once its message is acknowledged (the work-queue policy then
// removes it) a deliberate dispatch again, after `conveyor retry` or by the
// reconciler, is accepted. The Nats-Msg-Id header (job ID plus a nonce per
// Dispatch call) only removes the duplicates of one call's own publish
// retries within the stream's duplicate window; it is not what coalesces
// jobs, so a re-dispatch inside the window is never swallowed.
//
// The package also holds the client side of the connection (Connect:
// URL, credentials file or user and password, TLS CA) and EnsureStream,
// which creates or updates the stream idempotently; the dispatcher and the
// workers both call it, so either may start first. It does not run jobs
// nor decide when one is due: the worker's claim on the record does.
package nats
