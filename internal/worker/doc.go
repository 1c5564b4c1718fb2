// Package worker runs one job on the volume: claim the record, stream the
// input onto the volume, run the processor under its contract, upload the
// outputs, record the outcome. `conveyor worker run` (what SSM invokes on
// EC2) and the local dispatcher of `conveyor up` both call Worker.Run: one
// code path.
//
// It does not decide which jobs exist (the orchestrator does) nor how a job
// ID reaches it (the dispatcher does).
package worker
