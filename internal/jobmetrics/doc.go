// Package jobmetrics is where Conveyor observes its jobs for metrics, and
// names and writes the CloudWatch ones. A Tracker turns record changes (a
// worker's or an orchestrator's OnChange) into Observations (a job
// created, an attempt claimed, retried or ended with its phase times, a
// state entered, bytes in and out) for every Observer: the Writer here
// writes them as CloudWatch embedded metric format lines (internal/emf)
// on AWS, internal/metrics counts them for Prometheus in `conveyor up`.
// Callers of the Writer add the counts only they know (backlog, failed
// dispatches, failed events) with Write.
//
// Every metric is in Namespace with one dimension, StateBucket: the
// stack's state bucket, which the Lambda functions and the workers all
// know and which tells two stacks in one account apart.
package jobmetrics
