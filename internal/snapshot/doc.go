// Package snapshot takes, lists, restores and expires point-in-time copies
// of the worker's volume.
//
// It declares the Driver interface, with two drivers beside it: local/
// keeps incremental, deduplicated snapshots in an S3 bucket (the state
// bucket of `conveyor up`), ebs/ drives EBS snapshots of the data volume
// through the EC2 API. It also holds what both share: the retention
// policy (Apply, a pure function), the Scheduler, and the quiesce protocol
// with which `conveyor snapshot create --quiesce` pauses a running
// `conveyor up`. It knows nothing of jobs or of the pipeline.
package snapshot
