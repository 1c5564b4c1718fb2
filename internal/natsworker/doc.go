// Package natsworker is the loop of `conveyor worker serve` (and of the
// worker pool of `conveyor up --nats`): it pulls job IDs from the
// JetStream work-queue stream through one durable pull consumer shared by
// every worker, runs each with the same worker.Worker.Run as `worker run`,
// and settles the message by what Run recorded:
//
//   - succeeded or superseded: acknowledged (and the ack confirmed) only
//     after Run returned, that is after the outcome is in the record;
//   - dead: terminated with the reason;
//   - a retry the worker scheduled (worker.RetryError): NakWithDelay of
//     its backoff, so the same message comes back when it is due;
//   - held by another live worker (worker.ErrBusy): NakWithDelay of a
//     third of the lease, never acknowledged, so the message cannot be
//     lost if that worker dies; once the holder finished, the next
//     delivery finds the job done and acknowledges it;
//   - the worker stopping (SIGTERM): Run hands the attempt back uncounted
//     and the message is naked with a short delay for another worker.
//
// While a job runs its message's ack deadline is extended (InProgress)
// every third of the lease, as the worker renews the record's lease. The
// consumer's AckWait is one and a half leases: a killed worker's message
// comes back only once the record's lease has lapsed, so the next worker
// takes the job over under the job contract instead of finding it busy,
// and a live worker's job is never redelivered while its lease is renewed.
// Attempts are counted in the record, not by NATS: deliveries are not
// limited.
//
// It does not decide which jobs exist nor publish them (dispatch/nats
// does), and it does not open the volume or build the worker (the caller
// does, as for `worker run`).
package natsworker
