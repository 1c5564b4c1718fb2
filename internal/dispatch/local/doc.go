// Package local is the in-process dispatcher of `conveyor up`: a queue in
// front of a bounded pool of goroutines, each running the same worker entry
// point as `conveyor worker run`. The queue lives in memory; the job records
// in the state bucket are the durable truth, and the reconciler refills the
// queue after a restart.
package local
