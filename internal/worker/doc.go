// Package worker runs one job on the volume: claim the record, stream the
// input onto the volume, run the processor under its contract, publish the
// outputs, record the outcome. `conveyor worker run` (what SSM invokes on
// EC2) and the local dispatcher of `conveyor up` both call Worker.Run: one
// code path.
//
// It keeps the job contract's worker side: a claim token checked by every
// renewal and by the outcome write; a lease that fences itself (lease.go);
// publishing only as the input's current version, with conditional writes
// that an older version can never win (publish.go); superseded, handed
// back (graceful stop) and crashed attempts as distinct outcomes; bounded
// transfers and logs (transfer.go, logcap.go).
//
// It does not decide which jobs exist (the orchestrator does) nor how a job
// ID reaches it (the dispatcher does).
package worker
