// Package jobmetrics names Conveyor's job metrics and writes them as
// CloudWatch embedded metric format lines (internal/emf): a Writer turns
// record changes (a worker's or an orchestrator's OnChange) into jobs
// created, succeeded, dead and superseded, attempt durations and queue
// ages; callers add the counts only they know (backlog, failed dispatches,
// failed events) with Write.
//
// Every metric is in Namespace with one dimension, StateBucket: the
// stack's state bucket, which the Lambda functions and the workers all
// know and which tells two stacks in one account apart.
package jobmetrics
